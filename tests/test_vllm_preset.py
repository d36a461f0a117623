"""The ``vllm`` preset's query, ``sum(vllm:gpu_cache_usage_perc{...} or
vllm:kv_cache_usage_perc{...})``, gets what the one-metric shape gets (issue 12 items 6, 7
and 10), against the real Prometheus and the API double: freshness from the samples' own
timestamps, the pods that report counted (once, whichever names they export), its queries
batched with other vLLM targets', and ``recommend`` saying so.

Every pod is scraped each minute; the namespaces:

- ``vfrozen``: 2 pods on the new name at 0.9, until 6 minutes before ``END`` (``STOPPED``);
- ``vhalved``: 4 pods on the new name at 0.35; two stop reporting an hour before ``END``;
- ``vboth``: 2 pods exporting both names at 0.45 (a release with the old name kept as an
  alias): 0.9 in all, not 1.8;
- ``vnew-a``, ``vnew-b``: 2 pods on the new name at 0.9; ``nim-a``: 2 NIM pods at 0.9.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import Target, parse_config
from predictive_scaler.config.presets import SIGNAL_PRESETS
from predictive_scaler.decision import DecisionHistory
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    KubeClient,
)
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource, RangeResult
from predictive_scaler.promql import (
    fresh_samples_template,
    latest_sample_template,
    render_matchers,
    render_query,
    reporting_pods_template,
)
from predictive_scaler.ranges import RangeStatus
from predictive_scaler.recommend import RecommendOptions, recommend
from predictive_scaler.reconcile import TargetReconciler, prefetch_batched
from tests.kube_double import KubeDouble, make_configmap, make_hpa, write_kubeconfig
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock

MINUTE = 60.0
END = math.floor(time.time() / MINUTE) * MINUTE - MINUTE
STOPPED = END - 360.0
"""The last sample of the ``vfrozen`` namespace."""
OLD, NEW = "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"
VLLM_QUERY = SIGNAL_PRESETS["vllm"]["query"]

DEFAULTS = """\
defaults: {interval: 1m, step: 1m, history: 12h, minHistory: 1h, warmup: 10m,
  model: persistence, seasons: [], refitInterval: 1h, scaleDownDelay: 10m,
  missingDataHold: 30m, staleAfter: 5m}
"""


def _series() -> list[Series]:
    ts = np.arange(END - 13 * 3600, END + 1, MINUTE)
    series: list[Series] = []

    def pod(namespace: str, i: int, names: tuple[str, ...], level: float, until: float) -> None:
        taken = ts[ts <= until]
        labels = {"namespace": namespace, "pod": f"vllm-{i}"}
        for name in names:
            series.append((name, labels, taken, np.full(taken.size, level)))
        # Nothing queued, so the preset's saturation correction leaves the usage as it is.
        prefix = "" if names == ("gpu_cache_usage_perc",) else "vllm:"
        series.append((f"{prefix}num_requests_waiting", labels, taken, np.zeros(taken.size)))
        series.append((f"{prefix}num_requests_running", labels, taken, np.ones(taken.size)))

    for i in range(2):
        pod("vfrozen", i, (NEW,), 0.9, STOPPED)
        pod("vboth", i, (OLD, NEW), 0.45, END)
        pod("vnew-a", i, (NEW,), 0.9, END)
        pod("vnew-b", i, (NEW,), 0.9, END)
        pod("nim-a", i, ("gpu_cache_usage_perc",), 0.9, END)
    for i in range(4):
        pod("vhalved", i, (NEW,), 0.35, END if i < 2 else END - 3600)
    return series


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(_series())


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    src = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=10.0))
    yield src
    src.close()


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


def vllm_target(namespace: str, preset: str = "vllm") -> Target:
    [found] = parse_config(
        DEFAULTS + f"targets:\n  - hpa: {{namespace: {namespace}, name: vllm}}\n"
        f"    signals: [{{preset: {preset}}}]\n"
    ).targets
    return found


def vllm_hpa(namespace: str, min_replicas: int = 1, **kwargs: object) -> dict[str, object]:
    return make_hpa(
        namespace, "vllm", min_replicas, 10, metric_name="vllm_kv_cache_usage_perc", **kwargs
    )  # type: ignore[arg-type]


def min_replicas(server: KubeDouble, namespace: str) -> int:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "vllm")
    assert stored is not None
    return int(stored["spec"]["minReplicas"])


class Counting:
    """The real adapter, counting the queries a target makes on its own (not prefetched)."""

    def __init__(self, real: PrometheusSource) -> None:
        self.real = real
        self.queries: list[str] = []

    async def fetch_range(
        self, query: str, start: datetime, end: datetime, step_seconds: float
    ) -> RangeResult:
        self.queries.append(query)
        return await self.real.fetch_range(query, start, end, step_seconds)


async def _cycle(reconciler: TargetReconciler) -> object:
    return await asyncio.wait_for(reconciler.reconcile(), 60)


# ---------------------------------------------------------------- freshness (item 6)


@pytest.mark.parametrize("batched", [False, True])
async def test_vllm_lookback_copies_are_not_new_data(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, batched: bool
) -> None:
    # Pods on the new name stopped 4 minutes ago; Prometheus' lookback repeats their last
    # sample for 5 minutes: those steps are copies, not data.
    kube_server.put_object(vllm_hpa("vfrozen"))
    early = FakeClock(datetime.fromtimestamp(STOPPED + 240, UTC))
    reconciler = TargetReconciler(vllm_target("vfrozen"), source, kube, clock=early)
    if batched:
        # count, sum, fresh samples, newest sample, queue, running: one query each.
        assert await prefetch_batched(reconciler.plan_fetches(early()), source) == 6
    report = await asyncio.wait_for(reconciler.reconcile(), 60)
    signal = report.signals[0]
    assert signal.problem is None  # 4 minutes old: fresh
    state = reconciler._signals["kv_cache"]
    assert state.last is not None
    copies = state.values[-round((state.last - STOPPED) / MINUTE) :]
    assert copies.size == 4 and np.isnan(copies).all(), copies  # lookback copies, not data
    assert state.values[-5] == pytest.approx(1.8)  # the last real sample
    assert signal.freshness == "samples"


@pytest.mark.parametrize("batched", [False, True])
async def test_vllm_frozen_sample_is_stale_at_stale_after_from_its_own_timestamp(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, batched: bool
) -> None:
    # 6.5 minutes after the last sample, staleAfter 5m: stale, whatever the lookback repeats.
    kube_server.put_object(vllm_hpa("vfrozen"))
    late = FakeClock(datetime.fromtimestamp(STOPPED + 390, UTC))
    reconciler = TargetReconciler(vllm_target("vfrozen"), source, kube, clock=late)
    if batched:
        await prefetch_batched(reconciler.plan_fetches(late()), source)
    report = await asyncio.wait_for(reconciler.reconcile(), 60)
    problem = report.signals[0].problem
    assert problem is not None and problem.startswith("stale: newest sample is 390s old"), problem
    assert report.reason == "FailedGetMetric"
    assert min_replicas(kube_server, "vfrozen") == 1  # no raise on frozen data


# ---------------------------------------------------------------- reporting pods (item 7)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(("running", "expected"), [(4, 3), (2, 2)])
async def test_vllm_fewer_pods_reporting_than_running_never_lowers(
    kube_server: KubeDouble,
    kube: KubeClient,
    source: PrometheusSource,
    batched: bool,
    running: int,
    expected: int,
) -> None:
    # Half the pods' series vanished an hour ago; the demand they leave is a lower bound.
    annotations = {ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "3"}
    kube_server.put_object(
        vllm_hpa("vhalved", 3, annotations=annotations, current_replicas=running)
    )
    clock = FakeClock(datetime.fromtimestamp(END + 30, UTC))
    reconciler = TargetReconciler(vllm_target("vhalved"), source, kube, clock=clock)
    reconciler.history = DecisionHistory(tracking_since=clock() - timedelta(hours=1))
    if batched:
        await prefetch_batched(reconciler.plan_fetches(clock()), source)
    report = await asyncio.wait_for(reconciler.reconcile(), 60)
    assert min_replicas(kube_server, "vhalved") == expected
    signal = report.signals[0]
    assert signal.problem is None and signal.upper_max == pytest.approx(0.7)
    assert signal.reporting_pods == 2
    if running > 2:
        assert signal.partial == "2 of 4 pods reporting"
        assert report.reason == "PartialMetrics"
    else:
        assert signal.partial is None  # every running pod reports: the demand is complete


async def test_a_pod_exporting_both_names_counts_once(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource
) -> None:
    # 2 pods export both names; the HPA runs 4, so 2 do not report: a count of the names'
    # series (4) would hide them. The demand, the pod count and the fresh samples all see
    # each pod once.
    kube_server.put_object(vllm_hpa("vboth", 1, current_replicas=4))
    clock = FakeClock(datetime.fromtimestamp(END + 30, UTC))
    report = await asyncio.wait_for(
        TargetReconciler(vllm_target("vboth"), source, kube, clock=clock).reconcile(), 60
    )
    signal = report.signals[0]
    assert signal.problem is None and signal.freshness == "samples"
    assert signal.upper_max == pytest.approx(0.9)
    assert signal.reporting_pods == 2 and signal.partial == "2 of 4 pods reporting"
    at = datetime.fromtimestamp(END, UTC)
    raw = {"matchers": render_matchers({"namespace": "vboth"})}
    derived = {
        "fresh": fresh_samples_template(VLLM_QUERY, MINUTE),
        "count": reporting_pods_template(VLLM_QUERY),
        "latest": latest_sample_template(VLLM_QUERY),
    }
    answers = {}
    for name, template in derived.items():
        assert template is not None, name
        answer = await source.fetch_range(render_query(template, {}, raw=raw), at, at, MINUTE)
        assert answer.status is RangeStatus.OK, (name, answer.message)
        answers[name] = float(answer.values[-1])
    # One sample per pod in the minute, 2 pods, the newest taken at END itself.
    assert answers == {"fresh": 2.0, "count": 2.0, "latest": END}


# ---------------------------------------------------------------- batching


async def test_vllm_targets_are_batched_together_and_apart_from_other_shapes(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource
) -> None:
    clock = FakeClock(datetime.fromtimestamp(END + 30, UTC))
    targets = [vllm_target(ns) for ns in ("vnew-a", "vnew-b", "vboth")]
    targets.append(vllm_target("nim-a", preset="nim"))
    for t in targets:
        kube_server.put_object(
            make_hpa(t.namespace, "vllm", 1, 10, metric_name="vllm_kv_cache_usage_perc")
            if t.namespace != "nim-a"
            else make_hpa(t.namespace, "vllm", 1, 10)
        )
    own = Counting(source)
    reconcilers = [TargetReconciler(t, own, kube, clock=clock) for t in targets]
    plans = [p for r in reconcilers for p in r.plan_fetches(clock())]
    assert len(plans) == 4 * 6  # every query of every target has a batched form
    # The three vLLM targets share six queries (one per kind); the NIM target, whose query
    # names another metric, has its own six.
    assert await prefetch_batched(plans, source) == 12
    reports = [await _cycle(r) for r in reconcilers]
    assert own.queries == []  # nothing asked per target
    # Each as its own queries would have given.
    for t, batched in zip(targets, reports, strict=True):
        alone = await asyncio.wait_for(
            TargetReconciler(t, source, kube, clock=clock).reconcile(), 60
        )
        got = batched.signals[0]  # type: ignore[attr-defined]
        want = alone.signals[0]
        assert (got.problem, got.freshness, got.reporting_pods, got.points) == (
            want.problem,
            want.freshness,
            want.reporting_pods,
            want.points,
        ), t.namespace
        assert got.upper_max == pytest.approx(want.upper_max)
        level = 0.9 if t.namespace == "vboth" else 1.8  # 2 pods at 0.45 (both names), or 0.9
        assert got.problem is None and got.upper_max == pytest.approx(level), t.namespace


# ---------------------------------------------------------------- recommend


@pytest.fixture
def kubeconfig(kube_server: KubeDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return str(write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, kube_server.token))


async def test_recommend_says_the_vllm_presets_freshness_comes_from_samples(
    kube_server: KubeDouble, prometheus: PrometheusServer, kubeconfig: str
) -> None:
    kube_server.put_object(vllm_hpa("vnew-a"))
    config = DEFAULTS + "targets:\n  - hpa: {namespace: vnew-a, name: vllm}\n"
    config += "    signals: [{preset: vllm}]\n"
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": config}))
    options = RecommendOptions(
        config_map="ops/scaler", kubeconfig=kubeconfig, prometheus_url=prometheus.url
    )
    clock = FakeClock(datetime.fromtimestamp(END + 30, UTC))
    out = io.StringIO()
    await asyncio.wait_for(recommend(options, out, clock=clock), 120)
    assert "freshness judged on the grid" not in out.getvalue()
    out = io.StringIO()
    await asyncio.wait_for(recommend(replace(options, output="json"), out, clock=clock), 120)
    [row] = json.loads(out.getvalue())
    [signal] = row["signals"]
    assert (signal["name"], signal["freshness"]) == ("kv_cache", "samples")
