"""Security: no secret in logs, metrics, Events or annotations; TLS verified by default; label
values cannot inject PromQL; no eval/exec/shell/unsafe YAML in the product; a non-root,
read-only container."""

from __future__ import annotations

import ast
import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from predictive_scaler.config import PrometheusConfig, parse_config
from predictive_scaler.prometheus import (
    PrometheusSettings,
    PrometheusSource,
    RangeStatus,
    render_batch_query,
    render_matchers,
    render_query,
)
from predictive_scaler.reconcile import TargetReconciler
from tests.chaos import PrometheusFaultProxy
from tests.chaos.secret_cycle import PASSWORD, TOKEN, USER
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = [
    *sorted((ROOT / "predictive_scaler").glob("*.py")),
    *sorted((ROOT / "models").glob("*.py")),
]


# ---------------------------------------------------------------- secrets


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """Full controller cycles with a bearer token, then basic auth, against a fake Prometheus
    that checks the header; right, wrong (401) and failing (5xx, bad JSON) answers. Run in a
    child process whose logging is configured before any module binds a logger, so every
    line it logs is in its output."""
    workdir = tmp_path_factory.mktemp("secrets")
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos.secret_cycle", str(workdir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logs, _, result = done.stdout.rpartition("RESULT ")
    return logs + done.stderr, json.loads(result)


def _secrets() -> list[str]:
    import base64

    return [TOKEN, PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]


def test_the_credentials_were_really_used(secret_run: tuple[str, dict[str, Any]]) -> None:
    logs, result = secret_run
    seen = result["authorization_headers_seen"]
    assert f"Bearer {TOKEN}" in seen and any(h.startswith("Basic ") for h in seen)
    assert result["min_replicas"] == 3  # cycles decided and patched with auth on
    assert '"event": "min_replicas_patched"' in logs
    assert "401" in logs or "unauthorized" in logs  # the wrong-credential path ran


@pytest.mark.parametrize("where", ["logs", "metrics", "events", "hpas", "configmaps", "leases"])
def test_secrets_never_appear(secret_run: tuple[str, dict[str, Any]], where: str) -> None:
    logs, result = secret_run
    text = logs if where == "logs" else json.dumps(result[where])
    assert text.strip() or where in {"configmaps"}
    for secret in _secrets():
        assert secret not in text, f"a credential leaked into {where}"


def test_settings_repr_hides_credentials() -> None:
    settings = PrometheusSettings(
        url="https://prom.example:9090",
        basic_auth_username="u",
        basic_auth_password_file="/secret/password",
        headers={"X-Scope-OrgID": "tenant-secret-value"},
    )
    assert "tenant-secret-value" not in repr(settings) and "/secret/password" not in repr(settings)


# ---------------------------------------------------------------- TLS


def test_tls_verification_is_on_by_default() -> None:
    assert PrometheusSettings(url="https://prom.example").verify_tls is True
    assert PrometheusConfig(url="https://prom.example").verify_tls is True
    config = parse_config("prometheus: {url: 'https://prom.example:9090'}\ntargets: []\n")
    assert config.prometheus is not None and config.prometheus.verify_tls is True


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _series(namespace: str, ts: Any) -> list[tuple[dict[str, str], Any]]:
    return [({"namespace": namespace}, np.full(len(ts), 0.5))]


async def test_a_self_signed_certificate_fails_without_a_ca_bundle(
    self_signed: tuple[Path, Path],
) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    end = datetime(2025, 3, 3, tzinfo=UTC)
    start = end - timedelta(minutes=10)
    async with PrometheusFaultProxy(series=_series, ssl_context=context) as https:
        assert https.url.startswith("https://")
        default = PrometheusSource(PrometheusSettings(url=https.url, timeout_seconds=5))
        trusted = PrometheusSource(
            PrometheusSettings(url=https.url, timeout_seconds=5, ca_bundle=str(cert))
        )
        try:
            refused = await default.fetch_range('sum(m{namespace="a"})', start, end, 60)
            accepted = await trusted.fetch_range('sum(m{namespace="a"})', start, end, 60)
        finally:
            default.close()
            trusted.close()
    assert refused.status is RangeStatus.ERROR
    assert "TLS" in refused.message and "certificate" in refused.message.lower()
    assert accepted.status is RangeStatus.OK


# ---------------------------------------------------------------- PromQL injection

INJECTIONS = [
    'x"} or vector(100) #',
    "x'} or vector(100) #",
    'x\\"} or vector(100) #',
    "x`} or vector(100)",
    'x"}) or vector(100) or sum(m{a="',
    "x\n} or vector(100) #",
]


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    ts = np.arange(1_700_000_000 - 3600, 1_700_000_001, 60.0)
    series = [
        ("gpu_cache_usage_perc", {"namespace": "busy", "pod": "p"}, ts, np.full(ts.size, 0.5))
    ]
    return prometheus_factory(series)


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    made = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=5))
    yield made
    made.close()


@pytest.mark.parametrize("value", INJECTIONS)
async def test_label_values_cannot_inject_promql(source: PrometheusSource, value: str) -> None:
    """A selector value built to close the matcher and append `or vector(100)`: the real
    Prometheus sees one (odd) label value and answers nothing, never 100."""
    end = datetime.fromtimestamp(1_700_000_000, UTC)
    start = end - timedelta(minutes=5)
    config = parse_config(
        "targets:\n  - hpa: {namespace: busy, name: nim}\n"
        f"    selector: {{app: {json.dumps(value)}}}\n"
        "    signals:\n      - {name: kv, query: 'sum(gpu_cache_usage_perc{${matchers}})', "
        "targetPerPod: 1}\n"
    )
    [target] = config.targets
    assert dict(target.selector)["app"] == value
    reconciler = TargetReconciler(target, source, kube=None)  # type: ignore[arg-type]
    query = render_query(target.signals[0].query, {}, raw={"matchers": reconciler.matchers})
    result = await source.fetch_range(query, start, end, 60)
    assert result.status is RangeStatus.EMPTY, (query, result.message)
    batched, _names = render_batch_query(
        "gpu_cache_usage_perc", [{"namespace": "busy", "app": value}]
    )
    assert (await source.fetch_range(batched, start, end, 60)).status is RangeStatus.EMPTY
    # ...while the same matcher with an honest value finds the series.
    honest = render_query(
        "sum(gpu_cache_usage_perc{${matchers}})",
        {},
        raw={"matchers": render_matchers({"namespace": "busy"})},
    )
    assert (await source.fetch_range(honest, start, end, 60)).status is RangeStatus.OK


def test_untrusted_placeholders_must_sit_inside_quotes() -> None:
    with pytest.raises(ValueError, match="inside a quoted PromQL string"):
        render_query("sum(m{namespace=${ns}})", {"ns": "a} or vector(1)"})
    assert render_query('m{ns="${ns}"}', {"ns": '"} or vector(1) #'}) == (
        'm{ns="\\"} or vector(1) #"}'
    )


# ---------------------------------------------------------------- code


def _calls(path: Path) -> Iterator[tuple[str, ast.Call]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_eval_exec_shell_or_unsafe_deserialisation(path: Path) -> None:
    forbidden = {
        "eval",
        "exec",
        "compile",
        "__import__",
        "os.system",
        "os.popen",
        "os.exec",
        "pickle.load",
        "pickle.loads",
        "marshal.loads",
        "yaml.unsafe_load",
        "yaml.full_load",
    }
    for name, call in _calls(path):
        assert name not in forbidden, f"{path.name}:{call.lineno}: {name}("
        if name in {"yaml.load", "yaml.load_all"}:
            loader = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("Loader", "")
            assert "Safe" in loader, f"{path.name}:{call.lineno}: yaml.load without SafeLoader"
        if name.startswith("subprocess.") or name.startswith("asyncio.create_subprocess"):
            shell = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("shell", "False")
            assert shell == "False", f"{path.name}:{call.lineno}: {name}(shell=True)"
            assert name != "asyncio.create_subprocess_shell"
    text = path.read_text()
    assert not re.search(r"\byaml\.load\(", text) or "SafeLoader" in text


# ---------------------------------------------------------------- container


def _dockerfile_user() -> str:
    users = [
        line.split(None, 1)[1].strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip().upper().startswith("USER ")
    ]
    assert users, "the image must set USER"
    return users[-1]


def test_image_runs_as_a_numeric_non_root_user() -> None:
    user = _dockerfile_user()
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    final_stage = (ROOT / "Dockerfile").read_text().rsplit("FROM ", 1)[1]
    assert "USER " in final_stage


def _deployment() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "deploy/base/deployment.yaml").read_text()))
    [deployment] = [d for d in docs if d and d.get("kind") == "Deployment"]
    return deployment


def test_deployment_is_non_root_read_only_and_unprivileged() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"].get("runAsUser", 1) != 0
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert (sc.get("seccompProfile") or pod["securityContext"]["seccompProfile"])[
            "type"
        ] == "RuntimeDefault"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_rbac_grants_no_wildcards_and_no_secrets() -> None:
    for doc in yaml.safe_load_all((ROOT / "deploy/base/rbac.yaml").read_text()):
        for rule in (doc or {}).get("rules") or []:
            assert "*" not in rule.get("verbs", []), rule
            assert "*" not in rule.get("resources", []), rule
            assert "secrets" not in rule.get("resources", []), rule
