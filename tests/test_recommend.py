"""``recommend`` against the real Prometheus and the API double."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from predictive_scaler.recommend import RecommendError, RecommendOptions, recommend
from tests.kube_double import KubeDouble, make_configmap, make_hpa, write_kubeconfig
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, free_port
from tests.test_reconcile import CONFIG, flat_series

BUSY_ONLY = CONFIG.split("  - hpa: {namespace: idle")[0]


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


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
    out = io.StringIO()
    from dataclasses import replace

    assert await recommend(replace(options, output="json"), out) == 0
    [row] = json.loads(out.getvalue())
    assert row["recommendedMinReplicas"] == 3 and row["signals"][0]["needed"] == 3
    assert row["signals"][0]["recentError"]["meanAbsError"] is not None
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
