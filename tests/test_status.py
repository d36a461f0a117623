"""``predictive-scaler status``: the managed HPAs' state from their annotations alone.

The command runs as a user would run it (``main([...])`` with a kubeconfig) against the API
double, in a thread of its own (it runs its own event loop, as from a shell); no Prometheus.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from predictive_scaler.cli import main
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_REASON,
    ANNOTATION_UPDATED_AT,
    HpaSnapshot,
)
from predictive_scaler.status import compute_rows, format_age, format_table
from tests.kube_double import KubeDouble, make_hpa, write_kubeconfig


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def notes(
    base: int, applied: int, reason: str, *, model: str | None, upper: float | None, age: float
) -> dict[str, str]:
    """Annotations in the form the reconciler writes them."""
    at = _iso(datetime.now(UTC) - timedelta(seconds=age))
    out = {
        ANNOTATION_BASE_MIN_REPLICAS: str(base),
        ANNOTATION_APPLIED_MIN_REPLICAS: str(applied),
        ANNOTATION_REASON: reason,
        ANNOTATION_UPDATED_AT: at,
    }
    if model is not None:
        out[ANNOTATION_MODEL] = model
    if upper is not None:
        out[ANNOTATION_LAST_FORECAST] = json.dumps(
            {"signal": "kv_cache", "mean": 1.9, "upper": upper, "horizonSeconds": 900.0,
             "quantile": 0.9, "at": at},
            separators=(",", ":"),
        )  # fmt: skip
    return out


def populate(server: KubeDouble) -> None:
    raised = notes(1, 3, "TooFewReplicas: forecast needs 3", model="holt_winters", upper=2.04,
                   age=40)  # fmt: skip
    server.put_object(make_hpa("nim", "llama", 3, 8, annotations=raised))
    missing = notes(2, 4, "FailedGetMetric: kv_cache: no data: query returned no series",
                    model="mstl", upper=None, age=3 * 3600)  # fmt: skip
    server.put_object(make_hpa("nim", "mistral", 4, 8, annotations=missing))
    # Edited by hand after the last cycle: 5, where the controller applied 2.
    edited = notes(1, 2, "DesiredWithinRange: ok", model="persistence", upper=1.1, age=90)
    server.put_object(make_hpa("llm", "chat", 5, 10, annotations=edited))
    server.put_object(make_hpa("llm", "unmanaged", 1, 4))  # no annotation: not ours


async def run_status(
    server: KubeDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url, server.token)
    code = await asyncio.to_thread(main, ["status", "--kubeconfig", str(kubeconfig), *extra])
    return code, capsys.readouterr().out


async def test_json_lists_every_managed_hpa_from_its_annotations(
    kube_server: KubeDouble,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    populate(kube_server)
    code, out = await run_status(kube_server, tmp_path, capsys, "--json")
    assert code == 0
    rows = {(r["namespace"], r["hpa"]): r for r in json.loads(out)}
    assert sorted(rows) == [("llm", "chat"), ("nim", "llama"), ("nim", "mistral")]
    llama = rows[("nim", "llama")]
    assert (llama["base"], llama["applied"], llama["recommended"]) == (1, 3, 3)
    assert (llama["reason"], llama["model"], llama["data"]) == (
        "TooFewReplicas",
        "holt_winters",
        "ok",
    )
    assert llama["forecast_upper"] == 2.04 and llama["signal"] == "kv_cache"
    assert 30 <= llama["age_seconds"] < 120 and not llama["edited"]
    mistral = rows[("nim", "mistral")]
    assert (mistral["reason"], mistral["data"]) == ("FailedGetMetric", "missing")
    assert mistral["message"] == "kv_cache: no data: query returned no series"
    assert mistral["forecast_upper"] is None and mistral["age_seconds"] >= 3 * 3600
    chat = rows[("llm", "chat")]
    assert (chat["applied"], chat["recommended"], chat["edited"]) == (5, 2, True)
    # Only reads: status never writes, and lists once.
    assert [(r.method, r.path) for r in kube_server.requests] == [
        ("GET", "/apis/autoscaling/v2/horizontalpodautoscalers")
    ]


async def test_table_and_namespace_filter(
    kube_server: KubeDouble,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    populate(kube_server)
    code, out = await run_status(kube_server, tmp_path, capsys, "-n", "nim")
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split() == [
        "NAMESPACE", "HPA", "BASE", "APPLIED", "RECOMMENDED", "MAX", "REASON", "MODEL", "DATA",
        "FORECAST", "AGE",
    ]  # fmt: skip
    assert [line.split()[:2] for line in lines] == [["nim", "llama"], ["nim", "mistral"]]
    assert lines[0].split() == ["nim", "llama", "1", "3", "3", "8", "TooFewReplicas",
                                "holt_winters", "ok", "2.04", lines[0].split()[-1]]  # fmt: skip
    assert lines[1].split()[6:9] == ["FailedGetMetric", "mstl", "missing"]
    assert lines[1].split()[-1] == "3h"
    assert (
        kube_server.requests[-1].path
        == "/apis/autoscaling/v2/namespaces/nim/horizontalpodautoscalers"
    )


async def test_a_forbidden_list_is_one_line_and_exit_1(
    kube_server: KubeDouble,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube_server.fail_next("GET", "horizontalpodautoscalers$", 403)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, kube_server.token)
    code = await asyncio.to_thread(main, ["status", "--kubeconfig", str(kubeconfig)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.startswith("error: listing HPAs failed: 403")
    assert captured.err.count("\n") == 1


# ---------------------------------------------------------------- pure parts


def test_unparsable_annotations_are_shown_as_absent() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    snapshot = HpaSnapshot(
        "ns", "h", "1", 2, 5, 2,
        {ANNOTATION_BASE_MIN_REPLICAS: "x", ANNOTATION_LAST_FORECAST: "{not json",
         ANNOTATION_UPDATED_AT: "yesterday", ANNOTATION_REASON: "BaseRestored"},
    )  # fmt: skip
    [row] = compute_rows([snapshot], now)
    assert (row.base, row.recommended, row.age_seconds, row.forecast_upper) == (None,) * 4
    assert (row.reason, row.data, row.edited) == ("BaseRestored", "no forecast", False)
    assert compute_rows([HpaSnapshot("ns", "plain", "1", 1, 5, 1)], now) == []
    assert format_table([]) == "no HPA carries predictive-scaler annotations\n"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m"), (7199, "119m"), (7200, "2h"),
     (86_400 * 2, "2d"), (86_400 * 2 - 1, "47h")],
)  # fmt: skip
def test_format_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text
