"""Coexistence with KEDA (and any other controller that owns an HPA): never patched.

KEDA rebuilds the HPA of a ScaledObject from the ScaledObject, so a patched ``minReplicas`` is
reverted, taken as a hand edit, raised again: a fight. These tests run the real controller on
the real Prometheus against the API double and read the double's request log: an owned HPA
sees reads and Events, never a PATCH, across cycles; the target says why (report reason, one
Warning Event, a gauge, a log line).
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from kubernetes_asyncio import client

from predictive_scaler.config import Target, parse_config
from predictive_scaler.kube import HpaSnapshot, KubeClient
from predictive_scaler.ownership import (
    REASON_OWNED_BY_CONTROLLER,
    REASON_OWNED_BY_KEDA,
    find_foreign_owner,
)
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
from predictive_scaler.reconcile import TargetReconciler
from predictive_scaler.restore import restore_base
from predictive_scaler.runtime import Controller
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import FakeClock
from tests.test_reconcile import CONFIG, DATA_END, STEP, flat_series

ROOT = Path(__file__).resolve().parents[1]

SCALED_OBJECT_REF = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "name": "nim",
    "uid": "5b1c6c52-9d1e-4b8e-a0f4-3f1c2f7f7a10",
    "controller": True,
    "blockOwnerDeletion": True,
}
NIM_SERVICE_REF = {
    "apiVersion": "apps.nvidia.com/v1alpha1",
    "kind": "NIMService",
    "name": "llama",
    "uid": "0c3a1d8e-4e53-4a7f-8f0e-6a1b2c3d4e5f",
    "controller": True,
}


def owned_hpa(
    namespace: str, evidence: str, min_replicas: int = 1, **kwargs: Any
) -> dict[str, Any]:
    """The HPA ``<namespace>/nim`` as KEDA (or an operator) leaves it."""
    obj = make_hpa(namespace, "nim", min_replicas, 10, **kwargs)
    meta = obj["metadata"]
    if evidence == "ownerReference":
        meta["ownerReferences"] = [SCALED_OBJECT_REF]
    elif evidence == "label":  # references stripped (restored from a backup), labels kept
        meta["labels"]["scaledobject.keda.sh/name"] = "nim"
    elif evidence == "operator":
        meta["ownerReferences"] = [NIM_SERVICE_REF]
    else:
        raise AssertionError(evidence)
    return obj


def patches(server: KubeDouble, namespace: str) -> list[str]:
    return [
        r.path
        for r in server.requests
        if r.method in {"PATCH", "PUT"} and f"/namespaces/{namespace}/horizontalpod" in r.path
    ]


def min_replicas(server: KubeDouble, namespace: str) -> int:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "nim")
    assert stored is not None
    return int(stored["spec"]["minReplicas"])


def target(namespace: str) -> Target:
    [found] = [t for t in parse_config(CONFIG).targets if t.namespace == namespace]
    return found


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    src = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=5.0))
    yield src
    src.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


@pytest.fixture
async def controller(
    kube: KubeClient, prometheus: PrometheusServer, clock: FakeClock
) -> AsyncIterator[Controller]:
    made = Controller(kube, prometheus_url=prometheus.url, clock=clock)
    try:
        yield made
    finally:
        await made.aclose()


# ---------------------------------------------------------------- the controller


@pytest.mark.parametrize(
    ("evidence", "reason", "owner"),
    [
        ("ownerReference", REASON_OWNED_BY_KEDA, "ScaledObject/nim"),
        ("label", REASON_OWNED_BY_KEDA, "ScaledObject/nim"),
        ("operator", REASON_OWNED_BY_CONTROLLER, "NIMService/llama"),
    ],
)
async def test_an_owned_hpa_is_never_patched_and_says_why(
    kube_server: KubeDouble,
    controller: Controller,
    clock: FakeClock,
    evidence: str,
    reason: str,
    owner: str,
) -> None:
    # busy needs 3 pods: a plain HPA would be raised at once. idle is ours, for contrast.
    kube_server.put_object(owned_hpa("busy", evidence))
    kube_server.put_object(make_hpa("idle", "nim", 1, 10))
    await controller.load_config_text(CONFIG)
    reports, expositions = [], []
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            await controller.run_due(force=True)
            reports.append(controller.last_reports[("busy", "nim")])
            expositions.append(controller.metrics.generate_latest().decode())
            clock.advance(STEP)
    assert patches(kube_server, "busy") == []
    assert min_replicas(kube_server, "busy") == 1
    assert patches(kube_server, "idle")  # the log does record patches: idle got its annotations

    for report in reports:
        assert (report.reason, report.owner, report.patch_result) == (reason, owner, None)
    # Still forecast, decided and published (what it would set), only never applied.
    assert reports[0].signals[0].data_ok and reports[0].signals[0].upper_max is not None
    assert reports[0].recommended == 3 and reports[0].applied == 1
    stored = kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "busy", "nim")
    assert stored is not None
    assert not (stored["metadata"].get("annotations") or {})  # not even our annotations

    events = kube_server.list_events("busy")
    # One Event for the owner, not one per cycle.
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", reason)]
    assert owner in events[0]["message"] and "not patched" in events[0]["message"]
    owned = [e for e in logs if e["event"] == "hpa_owned_elsewhere" and e["log_level"] == "warning"]
    assert len(owned) == 1 and owned[0]["owner"] == owner and owned[0]["target"] == "busy/nim"

    exposition = controller.metrics.generate_latest().decode()
    line = next(
        line
        for line in exposition.splitlines()
        if line.startswith("predictive_scaler_hpa_owned_elsewhere{") and 'target="busy/nim"' in line
    )
    assert f'reason="{reason}"' in line and f'owner="{owner}"' in line and line.endswith(" 1.0")
    assert 'predictive_scaler_hpa_owned_elsewhere{hpa="nim",target="idle/nim"' not in exposition
    assert any(
        line.startswith("predictive_scaler_forecast_upper{") and 'target="busy/nim"' in line
        for line in expositions[0].splitlines()
    )  # the forecast a KEDA trigger scales on is still there


async def test_keda_taking_over_a_managed_hpa_ends_the_fight(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    """KEDA adopts an HPA we raised (``transfer-hpa-ownership``) and writes its own
    minReplicaCount: taken as a hand edit, that would be raised again every cycle."""
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    reconciler = TargetReconciler(target("busy"), source, kube, clock=clock)
    await reconciler.reconcile()
    assert min_replicas(kube_server, "busy") == 3
    taken = kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "busy", "nim")
    assert taken is not None
    taken["metadata"]["ownerReferences"] = [SCALED_OBJECT_REF]
    taken["spec"]["minReplicas"] = 1  # the ScaledObject's minReplicaCount
    kube_server.put_object(taken)
    before = len(patches(kube_server, "busy"))
    for _ in range(3):
        clock.advance(STEP)
        report = await reconciler.reconcile()
    assert len(patches(kube_server, "busy")) == before
    assert min_replicas(kube_server, "busy") == 1
    assert report.reason == REASON_OWNED_BY_KEDA

    # Removing the target restores nothing either: KEDA owns minReplicas now.
    outcome = await restore_base(kube, "busy", "nim", may_patch=lambda: True, now=clock())
    assert outcome == "owned"
    assert len(patches(kube_server, "busy")) == before


async def test_a_follower_and_a_dry_run_write_no_event(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(owned_hpa("busy", "ownerReference"))
    follower = TargetReconciler(target("busy"), source, kube, clock=clock, may_patch=lambda: False)
    dry = TargetReconciler(target("busy"), source, kube, clock=clock, dry_run=True)
    for reconciler in (follower, dry):
        report = await reconciler.reconcile()
        assert report.reason == REASON_OWNED_BY_KEDA
    assert kube_server.list_events("busy") == []
    assert patches(kube_server, "busy") == []


# ---------------------------------------------------------------- the check itself


def _snapshot(labels: dict[str, str], refs: list[dict[str, Any]]) -> HpaSnapshot:
    obj = make_hpa("nim", "h", 1, 10)
    obj["metadata"]["labels"] = labels
    obj["metadata"]["ownerReferences"] = refs
    obj["metadata"]["resourceVersion"] = "1"
    return HpaSnapshot.from_dict(obj)


@pytest.mark.parametrize(
    ("labels", "refs", "expected"),
    [
        ({}, [], None),
        ({"app.kubernetes.io/name": "h"}, [], None),
        ({}, [SCALED_OBJECT_REF], (REASON_OWNED_BY_KEDA, "ScaledObject/nim")),
        # KEDA's own reference is a controller one; any keda.sh reference counts.
        (
            {},
            [{**SCALED_OBJECT_REF, "controller": False}],
            (REASON_OWNED_BY_KEDA, "ScaledObject/nim"),
        ),
        ({"scaledobject.keda.sh/name": "so"}, [], (REASON_OWNED_BY_KEDA, "ScaledObject/so")),
        (
            {"app.kubernetes.io/managed-by": "keda-operator", "app.kubernetes.io/part-of": "so"},
            [],
            (REASON_OWNED_BY_KEDA, "ScaledObject/so"),
        ),
        ({"app.kubernetes.io/managed-by": "Helm"}, [], None),
        # KEDA wins over another reference listed first.
        (
            {},
            [NIM_SERVICE_REF, SCALED_OBJECT_REF],
            (REASON_OWNED_BY_KEDA, "ScaledObject/nim"),
        ),
        ({}, [NIM_SERVICE_REF], (REASON_OWNED_BY_CONTROLLER, "NIMService/llama")),
        # A garbage-collection-only reference (no controller) manages nothing.
        ({}, [{**NIM_SERVICE_REF, "controller": False}], None),
        ({}, [{k: v for k, v in NIM_SERVICE_REF.items() if k != "controller"}], None),
    ],
)
def test_find_foreign_owner(
    labels: dict[str, str], refs: list[dict[str, Any]], expected: tuple[str, str] | None
) -> None:
    found = find_foreign_owner(_snapshot(labels, refs))
    assert (None if found is None else (found.reason, found.owner)) == expected


# ---------------------------------------------------------------- the example


def test_the_scaled_object_example_scales_on_the_published_forecast() -> None:
    """deploy/examples/keda-scaledobject.yaml: KEDA's prometheus trigger on the forecast with
    the HPA's own per-pod target, a reactive trigger beside it, and the controller target that
    publishes the forecast for KEDA's HPA (validated like any configuration)."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/examples/keda-scaledobject.yaml").read_text()))
    [scaled] = [d for d in docs if d and d.get("kind") == "ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    namespace, name = scaled["metadata"]["namespace"], scaled["metadata"]["name"]
    triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
    forecast = triggers["forecast"]
    assert forecast["type"] == "prometheus" and forecast["metricType"] == "AverageValue"
    query = forecast["metadata"]["query"]
    assert "predictive_scaler_forecast_upper{" in query
    assert f'hpa="keda-hpa-{name}"' in query and 'signal="kv_cache"' in query
    assert f'target_namespace="{namespace}"' in query
    assert math.isclose(float(forecast["metadata"]["threshold"]), 0.7)
    # A missing forecast reads as 0, so the reactive trigger alone decides: never a raise on
    # data the controller does not have, and the HPA keeps scaling.
    assert forecast["metadata"]["ignoreNullValues"] == "true"
    reactive = triggers["kv-cache"]
    assert "gpu_cache_usage_perc" in reactive["metadata"]["query"]
    assert math.isclose(float(reactive["metadata"]["threshold"]), 0.7)

    # The target docs/operations.md#keda gives the controller for KEDA's HPA.
    section = (ROOT / "docs/operations.md").read_text().split("\n## KEDA\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "targets:" in b]
    [managed] = parse_config(block).targets
    assert (managed.namespace, managed.name) == (namespace, f"keda-hpa-{name}")
    assert managed.signals[0].name == "kv_cache"
    assert managed.signals[0].target_per_pod == pytest.approx(0.7)
    assert "selector: {service: meta-llama3-8b-instruct}" in block
    assert 'service="meta-llama3-8b-instruct"' in reactive["metadata"]["query"]
