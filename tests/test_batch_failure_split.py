"""A batched query that fails because of one target's data costs only that target, through
the fault proxy in front of the real Prometheus and the API double.

Four namespaces of saturated demand with the NIM preset's three queries (2 pods at 0.7
KV-cache usage, 5 waiting and 10 running each: 2.1 pods' worth, 3 pods). The proxy fails
``q1``'s queue query with 503, and, as a real server fails a whole request, every batched
queue query that includes ``q1``. The other three targets' data is all there: they must
decide on it, not hold as if it were missing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.batching import prefetch_batched
from predictive_scaler.config import Target, parse_config
from predictive_scaler.kube import KubeClient
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
from predictive_scaler.reconcile import TargetReconciler
from tests.chaos import PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series, free_port
from tests.support import FakeClock

STEP = 300.0
DATA_END = math.floor(time.time() / STEP) * STEP - STEP
NAMESPACES = ("q0", "q1", "q2", "q3")


def _series() -> list[Series]:
    ts = np.arange(DATA_END - 86400, DATA_END + 1, STEP)
    found: list[Series] = []
    for namespace in NAMESPACES:
        for pod in ("nim-0", "nim-1"):
            labels = {"namespace": namespace, "pod": pod}
            found.append(("gpu_cache_usage_perc", labels, ts, np.full(ts.size, 0.7)))
            found.append(("num_requests_waiting", labels, ts, np.full(ts.size, 5.0)))
            found.append(("num_requests_running", labels, ts, np.full(ts.size, 10.0)))
    return found


def _targets() -> list[Target]:
    lines = [
        "defaults: {interval: 5m, step: 5m, history: 12h, minHistory: 1h, warmup: 10m,",
        "  model: persistence, seasons: [], staleAfter: 15m}",
        "targets:",
    ]
    for namespace in NAMESPACES:
        lines += [
            f"  - hpa: {{namespace: {namespace}, name: nim}}",
            "    signals:",
            "      - name: kv_cache",
            "        query: 'sum(gpu_cache_usage_perc{${matchers}})'",
            "        queueQuery: 'sum(num_requests_waiting{${matchers}})'",
            "        runningQuery: 'sum(num_requests_running{${matchers}})'",
            "        hpaMetric: gpu_cache_usage_perc",
        ]
    return list(parse_config("\n".join(lines) + "\n").targets)


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(_series())


@pytest.fixture
async def proxy(prometheus: PrometheusServer) -> AsyncIterator[PrometheusFaultProxy]:
    async with PrometheusFaultProxy(upstream=prometheus.url) as started:
        yield started


@pytest.fixture
def source(proxy: PrometheusFaultProxy) -> Iterator[PrometheusSource]:
    src = PrometheusSource(PrometheusSettings(url=proxy.url, timeout_seconds=5.0))
    yield src
    src.close()


def _reconcilers(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> list[TargetReconciler]:
    made = []
    for target in _targets():
        kube_server.put_object(make_hpa(target.namespace, "nim", 1, 10))
        made.append(TargetReconciler(target, source, kube, clock=clock))
    return made


async def test_one_targets_failing_batch_costs_only_that_target(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    proxy: PrometheusFaultProxy,
    source: PrometheusSource,
) -> None:
    kube = KubeClient(kube_api, reporting_instance="test")
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))
    reconcilers = _reconcilers(kube_server, kube, source, clock)
    proxy.set_query_fault("5xx", "q1", "num_requests_waiting")
    plans = [plan for r in reconcilers for plan in r.plan_fetches(clock())]
    await asyncio.wait_for(prefetch_batched(plans, source), 30)
    reports = {}
    for reconciler in reconcilers:
        report = await asyncio.wait_for(reconciler.reconcile(), 30)
        reports[report.namespace] = report.signals[0].problem
    failed = reports.pop("q1")
    assert failed is not None and failed.startswith("queue query failed: "), failed
    assert reports == {"q0": None, "q2": None, "q3": None}, (
        f"q1's failing queue query cost the other targets of its batch: {reports}"
    )


async def test_an_unreachable_server_is_not_asked_again_in_parts() -> None:
    closed = PrometheusSource(
        PrometheusSettings(url=f"http://127.0.0.1:{free_port()}", timeout_seconds=1.0)
    )
    try:
        reconcilers = [
            TargetReconciler(t, closed, None, clock=FakeClock(datetime.now(UTC)))  # type: ignore[arg-type]
            for t in _targets()
        ]
        plans = [plan for r in reconcilers for plan in r.plan_fetches(datetime.now(UTC))]
        shapes = len({(p.template, p.start) for p in plans})
        made = await asyncio.wait_for(prefetch_batched(plans, closed), 30)
        assert made == shapes, "a server that cannot be reached was asked again in parts"
    finally:
        closed.close()


async def test_a_server_refusing_every_batch_gets_a_bounded_burst(
    proxy: PrometheusFaultProxy, source: PrometheusSource
) -> None:
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))
    reconcilers = [TargetReconciler(t, source, None, clock=clock) for t in _targets()]  # type: ignore[arg-type]
    proxy.set_fault("5xx")
    plans = [plan for r in reconcilers for plan in r.plan_fetches(clock())]
    shapes = len({(p.template, p.start) for p in plans})
    before = proxy.stats.requests
    made = await asyncio.wait_for(prefetch_batched(plans, source, split_queries=6), 30)
    assert made == proxy.stats.requests - before == shapes + 6
