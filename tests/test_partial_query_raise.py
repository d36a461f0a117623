"""A cycle with a failed query never raises above what the complete data would give
(DESIGN.md's invariant; issue 10 item 12), pinned against the real Prometheus and the API
double.

Two namespaces hold the same saturated demand (2 pods at 0.7 KV-cache usage, 20 requests
waiting and 10 running each: 4.2 pods' worth, 6 pods at 0.7) that falls to 0.7 (1 pod)
at ``DROP``. A first cycle before the fall raises minReplicas 1 -> 3 (scaleUpStep 2) in
both. The next cycle comes after the fall: in ``drops`` the queue query fails (a real
connection failure through the real adapter), in ``control`` nothing fails. The complete
data holds at 3 (the forecast fell; lowering waits for the scale-down delay), so the
failed-query cycle must not go above 3 either: the points it could not correct are not its
history, and the forecast its model made before the fall is not the complete data's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import Target, parse_config
from predictive_scaler.kube import KubeClient
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource, RangeResult
from predictive_scaler.reconcile import TargetReconciler
from tests.chaos import PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series, free_port
from tests.support import FakeClock

STEP = 300.0
DATA_END = math.floor(time.time() / STEP) * STEP - STEP
DROP = DATA_END - 7200
"""The demand falls from 4.2 to 0.7 pods' worth just after this."""


def _series() -> list[Series]:
    ts = np.arange(DATA_END - 2 * 86400, DATA_END + 1, STEP)
    high = ts <= DROP
    found: list[Series] = []
    for namespace in ("gappy", "whole"):  # saturated throughout: 4.2 pods' worth
        for pod in ("nim-0", "nim-1"):
            labels = {"namespace": namespace, "pod": pod}
            found.append(("gpu_cache_usage_perc", labels, ts, np.full(ts.size, 0.7)))
            found.append(("num_requests_waiting", labels, ts, np.full(ts.size, 20.0)))
            found.append(("num_requests_running", labels, ts, np.full(ts.size, 10.0)))
    for namespace in ("drops", "control"):
        for pod in ("nim-0", "nim-1"):
            labels = {"namespace": namespace, "pod": pod}
            found.append(("gpu_cache_usage_perc", labels, ts, np.where(high, 0.7, 0.35)))
            found.append(("num_requests_waiting", labels, ts, np.where(high, 20.0, 0.0)))
            found.append(("num_requests_running", labels, ts, np.where(high, 10.0, 5.0)))
    return found


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(_series())


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    src = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=5.0))
    yield src
    src.close()


@pytest.fixture
def closed_source() -> Iterator[PrometheusSource]:
    src = PrometheusSource(
        PrometheusSettings(url=f"http://127.0.0.1:{free_port()}", timeout_seconds=1.0)
    )
    yield src
    src.close()


class _FailingQueue:
    """The real adapter, except that queue queries go to a closed port while ``failing``."""

    def __init__(self, good: PrometheusSource, closed: PrometheusSource) -> None:
        self.good, self.closed, self.failing = good, closed, False

    async def fetch_range(
        self, query: str, start: datetime, end: datetime, step_seconds: float
    ) -> RangeResult:
        failing = self.failing and "num_requests_waiting" in query
        used = self.closed if failing else self.good
        return await used.fetch_range(query, start, end, step_seconds)


def _target(namespace: str, scale_up_step: int = 2) -> Target:
    text = f"""
defaults:
  interval: 5m
  step: 5m
  history: 1d
  minHistory: 1h
  warmup: 10m
  model: persistence
  seasons: []
  staleAfter: 30m
  scaleUpStep: {scale_up_step}
  scaleDownDelay: 30m
targets:
  - hpa: {{namespace: {namespace}, name: nim}}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{{${{matchers}}}})'
        queueQuery: 'sum(num_requests_waiting{{${{matchers}}}})'
        runningQuery: 'sum(num_requests_running{{${{matchers}}}})'
        hpaMetric: gpu_cache_usage_perc
"""
    [found] = parse_config(text).targets
    return found


async def test_a_failed_queue_query_never_raises_above_the_complete_data(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    source: PrometheusSource,
    closed_source: PrometheusSource,
) -> None:
    kube = KubeClient(kube_api, reporting_instance="test")
    clock = FakeClock(datetime.fromtimestamp(DROP - 240, UTC))
    flaky = _FailingQueue(source, closed_source)
    reconcilers = {}
    for namespace, used in (("drops", flaky), ("control", source)):
        kube_server.put_object(make_hpa(namespace, "nim", 1, 10))
        reconcilers[namespace] = TargetReconciler(_target(namespace), used, kube, clock=clock)

    async def cycle(namespace: str) -> int | None:
        report = await asyncio.wait_for(reconcilers[namespace].reconcile(), 30)
        return report.recommended

    first = {ns: await cycle(ns) for ns in reconcilers}
    assert first == {"drops": 3, "control": 3}  # 6 needed, limited to +2
    clock.advance(3 * STEP)  # past the fall, within staleAfter of the first cycle's points
    flaky.failing = True
    complete = await cycle("control")
    failed = await cycle("drops")
    assert complete == 3, "the complete data holds (lowering waits for the delay)"
    assert failed is not None and failed <= complete, (
        f"a failed queue query raised to {failed}; the complete data gives {complete}"
    )


async def test_a_queue_series_with_gaps_never_raises_above_the_complete_data(
    kube_server: KubeDouble, kube_api: client.ApiClient, prometheus: PrometheusServer
) -> None:
    # The chaos soak's round 466 (t73): the queue query answered with every other sample
    # gone, so every other step took the usage alone (a lower bound: 1.4 instead of 4.2).
    # Those points entered the history as if they were the demand; the jumps between them
    # widened the forecast's band, and its upper bound went above the complete data's.
    kube = KubeClient(kube_api, reporting_instance="test")
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))
    async with PrometheusFaultProxy(upstream=prometheus.url) as proxy:
        proxy.set_query_fault("partial", "gappy", "num_requests_waiting")
        source = PrometheusSource(PrometheusSettings(url=proxy.url, timeout_seconds=5.0))
        try:
            recommended = {}
            for namespace in ("gappy", "whole"):
                kube_server.put_object(make_hpa(namespace, "nim", 1, 20))
                target = _target(namespace, scale_up_step=20)
                reconciler = TargetReconciler(target, source, kube, clock=clock)
                report = await asyncio.wait_for(reconciler.reconcile(), 30)
                recommended[namespace] = report.recommended
        finally:
            source.close()
    assert proxy.stats.faults.get("partial", 0) > 0
    complete, gappy = recommended["whole"], recommended["gappy"]
    assert complete == 6, "the complete data: 4.2 pods' worth at 0.7 a pod"
    assert gappy is not None and gappy <= complete, (
        f"a queue series with gaps raised to {gappy}; the complete data gives {complete}"
    )
