"""Prometheus faults, through a fault proxy in front of the real Prometheus server.

Each fault is switched on after one good cycle, for an HPA we had raised to 6 over a user
base of 1. The invariants pinned for every fault: no raise from bad data, no lowering while
the data is bad and within ``missingDataHold``, then a decay of at most ``scaleDownStep`` per
cycle to the base and never below; no exception; the reason in the report, the log and the
HPA's annotation; recovery as soon as the fault ends.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import Target, parse_config
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_REASON,
    KubeClient,
)
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
from predictive_scaler.reconcile import TargetReconciler
from tests.chaos import BAD_DATA_FAULTS, PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import FakeClock
from tests.test_reconcile import DATA_END, flat_series, hpa, min_replicas

STEP = 300.0
HOLD = 600.0
SCALE_DOWN_DELAY = 900.0
TIMEOUT = 0.25

CONFIG = f"""
defaults:
  interval: 5m
  step: 5m
  history: 1d
  minHistory: 1h
  warmup: 10m
  model: persistence
  seasons: []
  refitInterval: 1h
  scaleDownDelay: {SCALE_DOWN_DELAY:.0f}s
  missingDataHold: {HOLD:.0f}s
  staleAfter: 15m
targets:
  - hpa: {{namespace: busy, name: nim}}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{{${{matchers}}}})'
        hpaMetric: gpu_cache_usage_perc
  - hpa: {{namespace: busy, name: per-pod}}
    signals:
      - name: kv_cache
        query: 'gpu_cache_usage_perc{{${{matchers}}}}'
        targetPerPod: 0.7
"""


def target(name: str = "nim") -> Target:
    [found] = [t for t in parse_config(CONFIG).targets if t.name == name]
    return found


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


@pytest.fixture
async def proxy(prometheus: PrometheusServer) -> AsyncIterator[PrometheusFaultProxy]:
    async with PrometheusFaultProxy(upstream=prometheus.url) as started:
        yield started


@pytest.fixture
def source(proxy: PrometheusFaultProxy) -> Iterator[PrometheusSource]:
    made = PrometheusSource(PrometheusSettings(url=proxy.url, timeout_seconds=TIMEOUT))
    yield made
    made.close()


@pytest.fixture
def clock() -> FakeClock:
    # Inside the backfilled history, so the data stays fresh while the clock moves on.
    return FakeClock(datetime.fromtimestamp(DATA_END - 6 * 3600 + 60, UTC))


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


async def inline(fit):  # type: ignore[no-untyped-def]
    return fit()


def raised_hpa(name: str = "nim", min_replicas: int = 6) -> dict[str, object]:
    annotations = {
        ANNOTATION_BASE_MIN_REPLICAS: "1",
        ANNOTATION_APPLIED_MIN_REPLICAS: str(min_replicas),
    }
    return make_hpa("busy", name, min_replicas, 10, annotations=annotations)


def check_bounds(server: KubeDouble, name: str = "nim", base: int = 1) -> int:
    stored = hpa_named(server, name)
    low, high = stored["spec"]["minReplicas"], stored["spec"]["maxReplicas"]
    assert base <= low <= high, (base, low, high)
    return int(low)


def hpa_named(server: KubeDouble, name: str) -> dict[str, object] | dict:  # type: ignore[type-arg]
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "busy", name)
    assert stored is not None
    return stored


@pytest.mark.parametrize("fault", sorted(BAD_DATA_FAULTS | {"closed_port"}))
async def test_bad_data_holds_then_decays_to_the_base_and_recovers(
    kube_server: KubeDouble,
    kube: KubeClient,
    proxy: PrometheusFaultProxy,
    source: PrometheusSource,
    clock: FakeClock,
    fault: str,
) -> None:
    kube_server.put_object(raised_hpa())
    reconciler = TargetReconciler(target(), source, kube, clock=clock, fit_runner=inline)
    first = await reconciler.reconcile()
    assert first.signals[0].data_ok and first.recommended == 6  # stabilising, not lower
    if fault == "closed_port":
        await proxy.stop()
    elif fault == "slow":
        proxy.set_fault("slow", slow_seconds=4 * TIMEOUT)
    else:
        proxy.set_fault(fault)
    fault_began = clock().timestamp() + STEP
    seen = []
    for _cycle in range(int(HOLD / STEP) + 7):
        clock.advance(STEP)
        before = min_replicas(kube_server, "busy")
        report = await reconciler.reconcile()  # never raises
        after = check_bounds(kube_server)
        assert not report.signals[0].data_ok and report.signals[0].problem
        assert after <= before, "raised on bad data"
        if clock().timestamp() - fault_began < HOLD:
            assert after == before, "lowered on bad data within the hold"
        else:
            assert before - after <= 1, "decayed faster than scaleDownStep"
        seen.append(after)
    assert seen[-1] == 1, seen  # handed back to the HPA: the base, never below
    reason = hpa(kube_server, "busy")["metadata"]["annotations"][ANNOTATION_REASON]  # type: ignore[index]
    assert reason.split(":")[0] in {"FailedGetMetric", "MissingDataDecay"}

    if fault == "closed_port":
        await proxy.start()  # the same port again
    proxy.clear()
    clock.advance(STEP)
    recovered = await reconciler.reconcile()
    assert recovered.signals[0].data_ok and recovered.recommended == 3
    assert min_replicas(kube_server, "busy") == 3


async def test_slow_prometheus_is_cut_off_by_the_timeout(
    kube_server: KubeDouble,
    kube: KubeClient,
    proxy: PrometheusFaultProxy,
    source: PrometheusSource,
    clock: FakeClock,
) -> None:
    import time

    kube_server.put_object(raised_hpa())
    proxy.set_fault("slow", slow_seconds=30.0)
    reconciler = TargetReconciler(target(), source, kube, clock=clock, fit_runner=inline)
    started = time.monotonic()
    report = await reconciler.reconcile()
    assert time.monotonic() - started < 2 * TIMEOUT + 1.5  # the adapter's own deadline
    assert "no response" in (report.signals[0].problem or "")
    assert min_replicas(kube_server, "busy") == 6


async def test_partial_series_never_lower_within_the_scale_down_delay(
    kube_server: KubeDouble,
    kube: KubeClient,
    proxy: PrometheusFaultProxy,
    source: PrometheusSource,
    clock: FakeClock,
) -> None:
    """Half the pods' series vanish (their scrapes stopped): the sum over the pods present is
    lower. That is still data (a pod that is gone holds no cache), so the controller may act
    on it, but only as on any lower forecast: not before ``scaleDownDelay``, one step a
    cycle, never below the base."""
    kube_server.put_object(raised_hpa("per-pod", 3))
    reconciler = TargetReconciler(target("per-pod"), source, kube, clock=clock, fit_runner=inline)
    report = await reconciler.reconcile()
    assert report.signals[0].data_ok and report.recommended == 3
    proxy.set_fault("partial")
    # Like the HPA's stabilisation window: counted from the last cycle that asked for more.
    began = clock().timestamp()
    for _cycle in range(int(SCALE_DOWN_DELAY / STEP) + 4):
        clock.advance(STEP)
        before = min_replicas_named(kube_server, "per-pod")
        await reconciler.reconcile()
        after = check_bounds(kube_server, "per-pod")
        assert after <= before
        if clock().timestamp() - began < SCALE_DOWN_DELAY:
            assert after == before, "lowered on partial series within the scale-down delay"
        assert before - after <= 1
    assert proxy.stats.faults.get("partial", 0) > 0


def min_replicas_named(server: KubeDouble, name: str) -> int:
    return int(hpa_named(server, name)["spec"]["minReplicas"])


async def test_nan_and_inf_never_reach_the_decision_as_numbers(
    kube_server: KubeDouble,
    kube: KubeClient,
    proxy: PrometheusFaultProxy,
    source: PrometheusSource,
    clock: FakeClock,
) -> None:
    """A fresh reconciler whose whole history is NaN, then +Inf: no model, no number, no raise,
    no write but the reason."""
    kube_server.put_object(raised_hpa())
    for kind in ("nan", "inf"):
        proxy.set_fault(kind)
        reconciler = TargetReconciler(target(), source, kube, clock=clock, fit_runner=inline)
        report = await reconciler.reconcile()
        [signal] = report.signals
        assert not signal.data_ok and signal.needed is None
        assert signal.upper_max is None or math.isfinite(signal.upper_max)
        assert report.recommended == 6 and min_replicas(kube_server, "busy") == 6
        clock.advance(STEP)
