"""Patch economy: a steady target is not rewritten, and reason flips alone never patch.

Counted on the PATCH requests the API double received over a simulated run against the real
Prometheus. Three targets: ``near`` hovers at the base (its reason flips between
TooFewReplicas and DesiredWithinRange while minReplicas stays at the base), ``hover`` holds a
raised minReplicas through a long scale-down delay while its need flips between 2 and 3
(DesiredWithinRange / ScaleDownStabilized), ``steady`` needs the same every cycle.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.annotations import ANNOTATION_STATE, INFO_REFRESH_SECONDS
from predictive_scaler.config import Target, parse_config
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_REASON,
    KubeClient,
)
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
from predictive_scaler.reconcile import TargetReconciler
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock, config_yaml

STEP = 300.0
DATA_END = math.floor(time.time() / STEP) * STEP - STEP
CYCLES = 24
# (per-pod KV-cache level of 2 pods, base minReplicas); noise 0.02 per pod.
LEVELS = {"near": (0.33, 2), "hover": (0.66, 1), "steady": (0.1, 1)}

CONFIG = config_yaml(
    """\
targets:
  - hpa: {namespace: near, name: nim}
    signals:
      - {name: kv_cache, query: 'sum(gpu_cache_usage_perc{${matchers}})',
         hpaMetric: gpu_cache_usage_perc}
  - hpa: {namespace: hover, name: nim}
    scaleDownDelay: 3h
    signals:
      - {name: kv_cache, query: 'sum(gpu_cache_usage_perc{${matchers}})',
         hpaMetric: gpu_cache_usage_perc}
  - hpa: {namespace: steady, name: nim}
    signals:
      - {name: kv_cache, query: 'sum(gpu_cache_usage_perc{${matchers}})',
         hpaMetric: gpu_cache_usage_perc}
"""
)


def series() -> list[Series]:
    ts = np.arange(DATA_END - 2 * 86400, DATA_END + 1, STEP)
    rng = np.random.default_rng(7)
    out: list[Series] = []
    for namespace, (level, _base) in LEVELS.items():
        for pod in ("nim-0", "nim-1"):
            values = np.round(level + rng.normal(0, 0.02, ts.size), 6)
            out.append(("gpu_cache_usage_perc", {"namespace": namespace, "pod": pod}, ts, values))
    return out


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(series())


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    src = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=5.0))
    yield src
    src.close()


def targets() -> dict[str, Target]:
    return {t.namespace: t for t in parse_config(CONFIG).targets}


def hpa_patches(server: KubeDouble, namespace: str) -> list[dict[str, object]]:
    return [
        json.loads(r.body or b"null")
        for r in server.requests
        if r.method == "PATCH" and f"/namespaces/{namespace}/horizontalpodautoscalers/" in r.path
    ]


async def test_reason_flips_alone_never_patch(
    kube_server: KubeDouble, kube_api: client.ApiClient, source: PrometheusSource
) -> None:
    kube = KubeClient(kube_api)
    clock = FakeClock(datetime.fromtimestamp(DATA_END - CYCLES * STEP, UTC))
    reconcilers = {}
    for namespace, target in targets().items():
        base = LEVELS[namespace][1]
        kube_server.put_object(make_hpa(namespace, "nim", base, 10, current_replicas=2))
        reconcilers[namespace] = TargetReconciler(
            target, source, kube, clock=clock, emit_events=False
        )
    reasons: dict[str, set[str]] = {namespace: set() for namespace in reconcilers}
    assert CYCLES * STEP > 2 * INFO_REFRESH_SECONDS  # long enough for a refresh to show
    # Cycles whose write is needed: the first (it records the base), every one that changes
    # minReplicas, and a refresh of the reason once its code has differed from the written
    # one on every cycle for INFO_REFRESH_SECONDS (a lasting change, not a flip).
    needed: dict[str, int] = dict.fromkeys(reconcilers, 0)
    written: dict[str, str] = {}
    differs_since: dict[str, float | None] = dict.fromkeys(reconcilers)
    for cycle in range(CYCLES):
        now = clock().timestamp()
        for namespace, reconciler in reconcilers.items():
            report = await reconciler.reconcile()
            assert report.error is None and report.reason is not None
            reasons[namespace].add(report.reason)
            since = differs_since[namespace]
            since = None if report.reason == written.get(namespace) else (since or now)
            refresh = since is not None and now - since >= INFO_REFRESH_SECONDS
            if cycle == 0 or report.applied != report.min_replicas_before or refresh:
                needed[namespace] += 1
                written[namespace], since = report.reason, None
            differs_since[namespace] = since
        clock.advance(STEP)

    # The run does flip reasons (else it would pin nothing).
    assert reasons["near"] == {"TooFewReplicas", "DesiredWithinRange"}
    assert reasons["hover"] == {"DesiredWithinRange", "ScaleDownStabilized"}
    for namespace in reconcilers:
        patches = hpa_patches(kube_server, namespace)
        assert len(patches) == needed[namespace], (
            f"{namespace}: {len(patches)} patches in {CYCLES} cycles where "
            f"{needed[namespace]} were needed (first contact, changes of minReplicas and "
            "lasting changes of the reason)"
        )
        stored = kube_server.get_object(
            "autoscaling/v2", "HorizontalPodAutoscaler", namespace, "nim"
        )
        assert stored is not None
        notes = stored["metadata"]["annotations"]
        assert notes[ANNOTATION_BASE_MIN_REPLICAS] == str(LEVELS[namespace][1])
        assert notes[ANNOTATION_APPLIED_MIN_REPLICAS] == str(stored["spec"]["minReplicas"])
        assert notes[ANNOTATION_REASON]  # informational, written with the first patch


async def test_the_state_annotation_is_written_when_a_clock_changes_not_every_cycle(
    kube_server: KubeDouble, kube_api: client.ApiClient, source: PrometheusSource
) -> None:
    # Issue 10 item 9 with item 11: the hold clock and the delay's needs are in
    # ``predictive-scaler.io/state``, written when they change in a way a restart would act
    # on: once when a hold starts (``nodata`` has no series at all), once on first contact for
    # a steady target; never on the cycles in between, and never with maxReplicas.
    kube = KubeClient(kube_api)
    clock = FakeClock(datetime.fromtimestamp(DATA_END - CYCLES * STEP, UTC))
    steady = targets()["steady"]
    nodata = replace(steady, namespace="nodata")
    notes = {ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "3"}
    kube_server.put_object(make_hpa("nodata", "nim", 3, 10, annotations=notes))
    kube_server.put_object(make_hpa("steady", "nim", 1, 10, current_replicas=2))
    reconcilers = [
        TargetReconciler(t, source, kube, clock=clock, emit_events=False) for t in (nodata, steady)
    ]
    for _ in range(CYCLES):
        for reconciler in reconcilers:
            await reconciler.reconcile()
        clock.advance(STEP)

    for namespace in ("nodata", "steady"):
        patches: list[Any] = hpa_patches(kube_server, namespace)
        with_state = [p for p in patches if ANNOTATION_STATE in p["metadata"]["annotations"]]
        assert len(with_state) == 1, f"{namespace}: {len(with_state)} state writes"
        for body in patches:
            assert set(body) == {"spec", "metadata"} and set(body["spec"]) == {"minReplicas"}
    # The hold ran out and handed back to the base, on the one stored clock.
    stored = kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "nodata", "nim")
    assert stored is not None and stored["spec"]["minReplicas"] == 1
    state = json.loads(stored["metadata"]["annotations"][ANNOTATION_STATE])
    assert state["bad"] == math.ceil(DATA_END - CYCLES * STEP)
