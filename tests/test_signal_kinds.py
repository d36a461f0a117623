"""Signal kinds (predictive_scaler/signals): the registry's contract, each kind's validation,
and each kind end to end against the real Prometheus and the API double.

``inflight``: 2 vLLM pods, each 10 requests running and 2 waiting (24 in flight: 3 pods at a
concurrency target of 8). ``noqueue``: the same running requests, no waiting series at all.
``plain``: a request rate of 3 per pod, read by the plain ``query`` kind.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import ConfigError, Signal, Target, parse_config
from predictive_scaler.kube import KubeClient
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
from predictive_scaler.reconcile import TargetReconciler, prefetch_batched
from predictive_scaler.signals import SIGNAL_KINDS, demand_template, kind_of
from predictive_scaler.whatif import fetch_target_history
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock, config_yaml

STEP = 300.0
DATA_END = math.floor(time.time() / STEP) * STEP - STEP
QUERY_KEYS = ("query", "queueQuery", "runningQuery")
IN_FLIGHT = "{name: in_flight, kind: in_flight, preset: vllm, targetPerPod: 8}"
"""vLLM's running and waiting requests against a concurrency target of 8 per pod."""


def series() -> list[Series]:
    ts = np.arange(DATA_END - 86400, DATA_END + 1, STEP)
    out: list[Series] = []
    for pod in ("vllm-0", "vllm-1"):
        for namespace in ("inflight", "noqueue"):
            labels = {"namespace": namespace, "pod": pod}
            out.append(("vllm:num_requests_running", labels, ts, np.full(ts.size, 10.0)))
        labels = {"namespace": "inflight", "pod": pod}
        out.append(("vllm:num_requests_waiting", labels, ts, np.full(ts.size, 2.0)))
        labels = {"namespace": "plain", "pod": pod}
        out.append(("http_requests_per_second", labels, ts, np.full(ts.size, 3.0)))
    return out


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(series())


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


def one_target(namespace: str, signal: str) -> Target:
    [target] = parse_config(
        config_yaml(
            f"targets:\n  - hpa: {{namespace: {namespace}, name: vllm}}\n    signals: [{signal}]\n"
        )
    ).targets
    return target


def rules(signal: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        one_target("ns", signal)
    return [f"{issue.path}: {issue.rule}" for issue in caught.value.errors]


# ---------------------------------------------------------------- the registry's contract


@pytest.mark.parametrize("name", list(SIGNAL_KINDS))
def test_every_kind_declares_what_it_reads(name: str) -> None:
    kind = SIGNAL_KINDS[name]
    assert kind.name == name
    assert kind.required and set(kind.required) <= set(kind.keys) <= set(QUERY_KEYS)
    assert all({a, b} <= set(kind.keys) for a, b in kind.together)
    assert set(kind.preset_keys) <= {*kind.keys, "hpaMetric"}
    # Every key it reads, set: its queries are exactly those templates, the demand's first.
    attrs = {"query": "query", "queueQuery": "queue_query", "runningQuery": "running_query"}
    given = {attrs[key]: f"sum({key}{{${{matchers}}}})" for key in kind.keys}
    signal = Signal("s", **{"query": None, **given}, target_per_pod=1.0, kind=name)  # type: ignore[arg-type]
    queries = kind.queries(signal)
    assert sorted(q.template for q in queries) == sorted(given.values())
    assert queries[0].template == given[attrs[kind.required[0]]] == demand_template(signal)
    assert len({q.role for q in queries}) == len(queries)
    # Demand is computed step by step: one value a step, NaN where the first has none.
    first = np.array([1.0, np.nan, 2.0])
    others = {q.role: np.array([1.0, 1.0, np.nan]) for q in queries[1:]}
    demand, _ = kind.compute(first, others)
    assert demand.shape == first.shape and np.isnan(demand[1]) and demand[0] >= 1.0


def test_an_unknown_kind_is_rejected_with_the_registered_names() -> None:
    assert rules("{name: s, kind: bogus, query: 'sum(x)', targetPerPod: 1}") == [
        "targets[0].signals[0].kind: must be one of: " + ", ".join(SIGNAL_KINDS)
    ]


def test_a_query_key_the_kind_does_not_read_is_rejected() -> None:
    signal = "{name: s, kind: query, query: 'sum(x)', queueQuery: 'sum(q)', targetPerPod: 1}"
    assert rules(signal) == ["targets[0].signals[0].queueQuery: is not read by kind query"]


def test_the_default_kind_is_the_kv_cache_with_its_saturation_correction() -> None:
    [signal] = one_target("ns", "{preset: nim}").signals
    assert signal.kind == "kv_cache"
    assert [q.role for q in kind_of(signal).queries(signal)] == ["usage", "queue", "running"]


def test_a_preset_fills_only_the_keys_its_kind_reads() -> None:
    [signal] = one_target("ns", "{preset: nim, kind: query}").signals
    assert (signal.query, signal.queue_query, signal.running_query) == (
        "sum(gpu_cache_usage_perc{${matchers}})",
        None,
        None,
    )
    assert signal.hpa_metric == "gpu_cache_usage_perc"


# ---------------------------------------------------------------- each kind, end to end


async def test_the_query_kind_takes_its_query_as_the_demand(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("plain", "vllm", 1, 10))
    target = one_target(
        "plain",
        "{name: rps, kind: query, query: 'sum(http_requests_per_second{${matchers}})', "
        "targetPerPod: 2}",
    )
    report = await TargetReconciler(target, source, kube, clock=clock).reconcile()
    [signal] = report.signals
    assert signal.problem is None and signal.partial is None
    assert signal.upper_max == pytest.approx(6.0) and signal.needed == 3
    assert report.recommended == 3


def min_replicas(server: KubeDouble, namespace: str) -> int:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "vllm")
    assert stored is not None
    return int(stored["spec"]["minReplicas"])


async def test_requests_in_flight_need_a_pod_per_concurrency_target(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("inflight", "vllm", 1, 10))
    reconciler = TargetReconciler(one_target("inflight", IN_FLIGHT), source, kube, clock=clock)
    plans = reconciler.plan_fetches(clock())
    # Both declared queries are batched (the running one with its freshness forms too).
    batched = {m for p in plans for m in p.metrics}
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting"} <= batched
    assert await prefetch_batched(plans, source) >= 2
    report = await reconciler.reconcile()
    [signal] = report.signals
    assert signal.problem is None and signal.partial is None
    assert signal.upper_max == pytest.approx(24.0)  # 2 pods x (10 running + 2 waiting)
    assert signal.needed == 3 and signal.reporting_pods == 2
    assert min_replicas(kube_server, "inflight") == 3


async def test_requests_in_flight_without_a_queue_series_are_a_lower_bound(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("noqueue", "vllm", 1, 10))
    target = one_target("noqueue", IN_FLIGHT)
    report = await TargetReconciler(target, source, kube, clock=clock).reconcile()
    [signal] = report.signals
    assert signal.upper_max == pytest.approx(20.0)  # the running requests alone
    assert signal.partial is not None
    assert signal.partial.startswith("demand counts no waiting requests at ")
    assert min_replicas(kube_server, "noqueue") == 3  # a lower bound may raise


def test_requests_in_flight_need_both_queries_and_a_concurrency_target() -> None:
    assert rules("{name: f, kind: in_flight, runningQuery: 'sum(r)', targetPerPod: 8}") == [
        "targets[0].signals[0].queueQuery: is required unless preset is set",
    ]
    assert rules("{kind: in_flight, preset: vllm}") == [
        "targets[0].signals[0].targetPerPod: "
        "is required when hpaMetric is null (the HPA target to read)",
    ]
    assert rules(IN_FLIGHT.replace("}", ", query: 'sum(q)'}")) == [
        "targets[0].signals[0].query: is not read by kind in_flight"
    ]


async def test_the_what_if_backtest_replays_requests_in_flight(source: PrometheusSource) -> None:
    target = one_target("inflight", IN_FLIGHT)
    [signal] = target.signals
    values, query = await fetch_target_history(
        target, signal, source, DATA_END - 3600, DATA_END, STEP
    )
    assert query == 'sum(vllm:num_requests_running{namespace="inflight"})'
    assert values.size == 13 and np.allclose(values, 24.0)
