"""``recommend`` against the real Prometheus and the API double."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from predictive_scaler.recommend import RecommendError, RecommendOptions, recommend
from tests.kube_double import KubeDouble, make_configmap, make_hpa, write_kubeconfig
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series, free_port
from tests.test_reconcile import CONFIG, DATA_END, STEP, flat_series

BUSY_ONLY = CONFIG.split("  - hpa: {namespace: idle")[0]


LIVE_COVERAGE, LIVE_ERROR, LIVE_PEAK_COVERAGE = 0.62, 0.137, 0.55
"""What a running controller published for busy/nim as its forecasts came due (a morning ramp
can cover far less than the backtest's 90 %): per step, and of the window's peak."""


def live_series() -> list[Series]:
    ts = np.arange(DATA_END - 3600, DATA_END + 1, STEP)
    labels = {
        "target": "busy/nim",
        "target_namespace": "busy",
        "hpa": "nim",
        "signal": "kv_cache",
        "namespace": "predictive-scaler",
        "pod": "predictive-scaler-0",
    }
    return [
        ("predictive_scaler_forecast_coverage", labels, ts, np.full(ts.size, LIVE_COVERAGE)),
        ("predictive_scaler_forecast_abs_error", labels, ts, np.full(ts.size, LIVE_ERROR)),
        (
            "predictive_scaler_forecast_peak_coverage",
            labels,
            ts,
            np.full(ts.size, LIVE_PEAK_COVERAGE),
        ),
    ]


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series() + live_series())


@pytest.fixture
def kubeconfig(kube_server: KubeDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return str(write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, kube_server.token))


async def test_table_and_json(
    kube_server: KubeDouble, prometheus: PrometheusServer, kubeconfig: str
) -> None:
    stored = kube_server.put_object(make_hpa("busy", "nim", 1, 10, current_replicas=2))
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": BUSY_ONLY}))
    options = RecommendOptions(
        config_map="ops/scaler", kubeconfig=kubeconfig, prometheus_url=prometheus.url
    )
    out = io.StringIO()
    assert await recommend(options, out) == 0
    table = out.getvalue()
    assert "target busy/nim" in table
    assert "min 1 / replicas 2 / max 10" in table
    assert "recommended  minReplicas 3 (1 -> 3)" in table
    assert "kv_cache" in table and "persistence" in table and "(p90)" in table
    # Live coverage (the running controller's, as forecasts came due) apart from the backtest's.
    assert "live 0.137, 62% <= p90, window peak 55% <= p90" in table
    assert "backtest " in table
    # The PromQL each signal really ran, ${matchers} rendered.
    assert 'query        sum(gpu_cache_usage_perc{namespace="busy"})' in table
    out = io.StringIO()
    from dataclasses import replace

    assert await recommend(replace(options, output="json"), out) == 0
    [row] = json.loads(out.getvalue())
    assert row["recommendedMinReplicas"] == 3 and row["signals"][0]["needed"] == 3
    assert row["signals"][0]["recentError"]["meanAbsError"] is not None
    live = row["signals"][0]["liveError"]
    assert (live["meanAbsError"], live["coverage"]) == (LIVE_ERROR, LIVE_COVERAGE)
    assert live["windowPeakCoverage"] == LIVE_PEAK_COVERAGE
    assert row["signals"][0]["query"] == 'sum(gpu_cache_usage_perc{namespace="busy"})'
    # dry: nothing written
    after = kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "busy", "nim")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert kube_server.list_events() == []


async def test_unreachable_prometheus_is_one_line(kube_server: KubeDouble, kubeconfig: str) -> None:
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": BUSY_ONLY}))
    options = RecommendOptions(
        config_map="ops/scaler",
        kubeconfig=kubeconfig,
        prometheus_url=f"http://127.0.0.1:{free_port()}",
    )
    with pytest.raises(RecommendError) as caught:
        await recommend(options, io.StringIO())
    assert "\n" not in str(caught.value) and "unavailable" in str(caught.value)


async def test_exits_non_zero_when_a_target_has_no_usable_data(
    kube_server: KubeDouble, prometheus: PrometheusServer, kubeconfig: str
) -> None:
    # ``empty`` has no series at all: the table says so, and the exit code does too.
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    kube_server.put_object(make_hpa("empty", "nim", 1, 10))
    config = CONFIG.replace(
        "  - hpa: {namespace: idle, name: nim}\n",
        "  - hpa: {namespace: idle, name: nim}\n    enabled: false\n",
    )
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": config}))
    options = RecommendOptions(
        config_map="ops/scaler", kubeconfig=kubeconfig, prometheus_url=prometheus.url
    )
    out = io.StringIO()
    assert await recommend(options, out) == 1
    table = out.getvalue()
    assert "target empty/nim" in table and "problem: no data" in table
    assert "recommended  minReplicas 3" in table  # busy/nim still decided
    [unusable] = [line for line in table.splitlines() if line.startswith("no usable data: ")]
    assert "empty/nim" in unusable and "busy/nim" not in unusable
