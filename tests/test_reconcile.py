"""One target's cycle, pinned against the real Prometheus and the API double.

Two namespaces of flat KV-cache usage: ``busy`` (2 pods at 0.9: needs 3 pods at 0.7) and
``idle`` (2 pods at 0.1: needs 1). The persistence model keeps forecasts predictable.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import Target, parse_config
from predictive_scaler.decision import DecisionHistory
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_REASON,
    KubeClient,
)
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource, RangeResult
from predictive_scaler.reconcile import (
    MANAGED_ANNOTATIONS,
    TargetReconciler,
    determine_base,
    prefetch_batched,
)
from predictive_scaler.runtime import Controller
from tests.kube_double import KubeDouble, make_deployment, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series, free_port
from tests.support import FakeClock, config_yaml

STEP = 300.0
DATA_END = math.floor(time.time() / STEP) * STEP - STEP
STOPPED = DATA_END - 360.0
"""The last sample of the ``stops`` namespace."""

CONFIG = config_yaml(
    """\
targets:
  - hpa: {namespace: busy, name: nim}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{${matchers}})'
        hpaMetric: gpu_cache_usage_perc
  - hpa: {namespace: idle, name: nim}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{${matchers}})'
        hpaMetric: gpu_cache_usage_perc
  - hpa: {namespace: halved, name: nim}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{${matchers}})'
        hpaMetric: gpu_cache_usage_perc
  - hpa: {namespace: empty, name: nim}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{${matchers}})'
        hpaMetric: gpu_cache_usage_perc
"""
)


VLLM_NAMES = {"vllm-old": "vllm:gpu_cache_usage_perc", "vllm-new": "vllm:kv_cache_usage_perc"}


def flat_series() -> list[Series]:
    ts = np.arange(DATA_END - 2 * 86400, DATA_END + 1, STEP)
    rng = np.random.default_rng(3)
    series: list[Series] = []
    for namespace, level in (("busy", 0.9), ("idle", 0.1)):
        for pod in ("nim-0", "nim-1"):
            values = np.round(level + rng.normal(0, 0.005, ts.size), 6)
            series.append(
                ("gpu_cache_usage_perc", {"namespace": namespace, "pod": pod}, ts, values)
            )
    # ``queued``: 2 pods saturated at 0.7 with 5 waiting and 10 running each: demand 2.1.
    for pod in ("nim-0", "nim-1"):
        labels = {"namespace": "queued", "pod": pod}
        series.append(("gpu_cache_usage_perc", labels, ts, np.full(ts.size, 0.7)))
        series.append(("num_requests_waiting", labels, ts, np.full(ts.size, 5.0)))
        series.append(("num_requests_running", labels, ts, np.full(ts.size, 10.0)))
    # ``shared``: two NIM models in one namespace, their pods told apart by the app label the
    # Deployments select on (as the pods' labels reach their series through discovery).
    for app, level in (("llama", 0.9), ("mistral", 0.1)):
        for pod in ("0", "1"):
            labels = {"namespace": "shared", "pod": f"{app}-{pod}", "app": app}
            series.append(("gpu_cache_usage_perc", labels, ts, np.full(ts.size, level)))
    # vLLM under each of its KV-cache names: older releases, and newer ones only.
    for namespace, metric in VLLM_NAMES.items():
        for pod in ("vllm-0", "vllm-1"):
            values = np.round(0.9 + rng.normal(0, 0.005, ts.size), 6)
            series.append((metric, {"namespace": namespace, "pod": pod}, ts, values))
    # ``halved``: 4 pods at 0.35 (1.4: 2 pods' worth); two stop reporting an hour before the
    # end (lost scrapes), so the sum over the pods that report halves.
    for pod in ("nim-0", "nim-1", "nim-2", "nim-3"):
        until = ts if pod in ("nim-0", "nim-1") else ts[ts <= DATA_END - 3600]
        labels = {"namespace": "halved", "pod": pod}
        series.append(("gpu_cache_usage_perc", labels, until, np.full(until.size, 0.35)))
    # ``stops``: scraped every minute at 0.9 per pod, until 6 minutes before DATA_END.
    minutes = np.arange(DATA_END - 86400, STOPPED + 1, 60.0)
    for pod in ("nim-0", "nim-1"):
        labels = {"namespace": "stops", "pod": pod}
        series.append(("gpu_cache_usage_perc", labels, minutes, np.full(minutes.size, 0.9)))
    return series


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


def target(namespace: str) -> Target:
    [found] = [t for t in parse_config(CONFIG).targets if t.namespace == namespace]
    return found


def queued_target(running_metric: str = "num_requests_running") -> Target:
    """The ``queued`` namespace with the NIM preset's saturation correction."""
    text = f"""
defaults:
  interval: 5m
  step: 5m
  history: 1d
  minHistory: 1h
  warmup: 10m
  model: persistence
  seasons: []
  staleAfter: 15m
targets:
  - hpa: {{namespace: queued, name: nim}}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{{${{matchers}}}})'
        queueQuery: 'sum(num_requests_waiting{{${{matchers}}}})'
        runningQuery: 'sum({running_metric}{{${{matchers}}}})'
        hpaMetric: gpu_cache_usage_perc
"""
    [found] = parse_config(text).targets
    return found


class FailingFor:
    """The real adapter, except that queries containing ``needle`` go to a closed port (a
    real connection failure through the real adapter) while ``failing`` is set."""

    def __init__(self, good: PrometheusSource, closed: PrometheusSource, needle: str) -> None:
        self.good, self.closed, self.needle, self.failing = good, closed, needle, True

    async def fetch_range(
        self, query: str, start: datetime, end: datetime, step_seconds: float
    ) -> RangeResult:
        used = self.closed if self.failing and self.needle in query else self.good
        return await used.fetch_range(query, start, end, step_seconds)


def hpa(server: KubeDouble, namespace: str, name: str = "nim") -> dict[str, object]:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", namespace, name)
    assert stored is not None
    return stored


def min_replicas(server: KubeDouble, namespace: str, name: str = "nim") -> int:
    return int(hpa(server, namespace, name)["spec"]["minReplicas"])  # type: ignore[index]


@pytest.fixture
async def controller(
    kube: KubeClient, prometheus: PrometheusServer, clock: FakeClock
) -> AsyncIterator[Controller]:
    made = Controller(kube, prometheus_url=prometheus.url, clock=clock)
    try:
        yield made
    finally:
        await made.aclose()


# ---------------------------------------------------------------- base


@pytest.mark.parametrize(
    ("spec_min", "annotations", "expected"),
    [
        (2, {}, (2, False)),  # first contact
        (5, {ANNOTATION_BASE_MIN_REPLICAS: "2", ANNOTATION_APPLIED_MIN_REPLICAS: "5"}, (2, False)),
        (3, {ANNOTATION_BASE_MIN_REPLICAS: "2", ANNOTATION_APPLIED_MIN_REPLICAS: "5"}, (3, True)),
        (4, {ANNOTATION_BASE_MIN_REPLICAS: "2"}, (2, False)),
    ],
)
def test_determine_base(
    spec_min: int, annotations: dict[str, str], expected: tuple[int, bool]
) -> None:
    from predictive_scaler.kube import HpaSnapshot

    snapshot = HpaSnapshot("ns", "h", "1", spec_min, 10, 1, annotations)
    assert determine_base(snapshot) == expected


# ---------------------------------------------------------------- cycles


async def test_raises_to_demand_and_records_state(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    reconciler = TargetReconciler(target("busy"), source, kube, clock=clock)
    report = await reconciler.reconcile()
    assert report.recommended == 3 and report.patch_result == "applied"
    assert min_replicas(kube_server, "busy") == 3
    notes = hpa(kube_server, "busy")["metadata"]["annotations"]  # type: ignore[index]
    assert notes[ANNOTATION_BASE_MIN_REPLICAS] == "1"
    assert notes[ANNOTATION_APPLIED_MIN_REPLICAS] == "3"
    [event] = kube_server.list_events("busy")
    assert event["reason"] == report.reason and event["message"].startswith("minReplicas 1 -> 3")

    # Incremental: the next cycle asks Prometheus only for the new point.
    points = report.signals[0].points
    clock.advance(STEP)
    before = len(kube_server.requests)
    again = await reconciler.reconcile()
    assert again.signals[0].points == points  # bounded buffer, one new point, one dropped
    assert again.patch_result is None  # nothing changed: no write
    assert len(kube_server.requests) == before + 1  # only the read


async def test_saturation_correction_uses_the_running_series(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("queued", "nim", 1, 10))
    report = await TargetReconciler(queued_target(), source, kube, clock=clock).reconcile()
    assert report.signals[0].upper_max == pytest.approx(2.1)  # 1.4 * (1 + 10 / 20)
    assert report.signals[0].partial is None
    assert min_replicas(kube_server, "queued") == 3


async def test_an_empty_running_query_never_inflates_demand(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    # Issue 12 item 1: with no running series the queue was divided by an assumed 1.
    kube_server.put_object(make_hpa("queued", "nim", 1, 10))
    absent = queued_target(running_metric="num_requests_active")  # no such series
    report = await TargetReconciler(absent, source, kube, clock=clock).reconcile()
    signal = report.signals[0]
    assert signal.upper_max == pytest.approx(1.4)  # the usage, uncorrected
    assert signal.partial is not None and "not corrected for saturation" in signal.partial
    assert min_replicas(kube_server, "queued") == 2


async def test_a_failed_running_query_keeps_its_points_out_of_the_history(
    kube_server: KubeDouble,
    kube: KubeClient,
    source: PrometheusSource,
    closed_source: PrometheusSource,
    clock: FakeClock,
) -> None:
    kube_server.put_object(make_hpa("queued", "nim", 1, 10))
    flaky = FailingFor(source, closed_source, "num_requests_running")
    reconciler = TargetReconciler(queued_target(), flaky, kube, clock=clock)
    report = await reconciler.reconcile()
    signal = report.signals[0]
    assert signal.problem is not None and signal.problem.startswith("running query failed")
    assert signal.points == 0  # nothing computed from the failed query was kept
    assert min_replicas(kube_server, "queued") == 1  # no raise on data it does not have
    flaky.failing = False
    clock.advance(STEP)
    report = await reconciler.reconcile()
    assert report.signals[0].partial is None and report.signals[0].points > 0
    kept = reconciler._signals["kv_cache"].values
    assert np.nanmax(kept) == pytest.approx(2.1)  # the whole history, corrected
    assert min_replicas(kube_server, "queued") == 3


@pytest.mark.parametrize("namespace", list(VLLM_NAMES))
@pytest.mark.parametrize(
    "hpa_metric",
    ["vllm_kv_cache_usage_perc", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
)
async def test_vllm_preset_reads_either_metric_name(
    kube_server: KubeDouble,
    kube: KubeClient,
    source: PrometheusSource,
    clock: FakeClock,
    namespace: str,
    hpa_metric: str,
) -> None:
    # The HPA may scale on the adapter's vLLM rule (vllm_kv_cache_usage_perc) or on a Pods
    # metric named after either of vLLM's own names; the per-pod target is found in each case.
    kube_server.put_object(make_hpa(namespace, "vllm", 1, 10, metric_name=hpa_metric))
    config = f"""
defaults: {{interval: 5m, step: 5m, history: 1d, minHistory: 1h, warmup: 10m,
  model: persistence, seasons: [], refitInterval: 1h}}
targets:
  - hpa: {{namespace: {namespace}, name: vllm}}
    signals: [{{preset: vllm}}]
"""
    [vllm] = parse_config(config).targets
    report = await TargetReconciler(vllm, source, kube, clock=clock).reconcile()
    assert report.signals[0].problem is None
    assert report.recommended == 3  # 2 pods at 0.9 at 0.7 per pod
    stored = kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "vllm")
    assert stored is not None and stored["spec"]["minReplicas"] == 3


def stops_target() -> Target:
    [found] = parse_config(
        """
defaults: {interval: 1m, step: 1m, history: 12h, minHistory: 1h, warmup: 10m,
           model: persistence, seasons: [], staleAfter: 5m}
targets:
  - hpa: {namespace: stops, name: nim}
    signals:
      - {name: kv_cache, query: 'sum(gpu_cache_usage_perc{${matchers}})',
         hpaMetric: gpu_cache_usage_perc}
"""
    ).targets
    return found


@pytest.mark.parametrize("batched", [False, True])
async def test_lookback_copies_are_not_new_data_and_stale_after_means_its_duration(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, batched: bool
) -> None:
    # Issue 12 item 6: Prometheus repeats a stopped series' last sample for 5 minutes.
    kube_server.put_object(make_hpa("stops", "nim", 1, 10))
    early = FakeClock(datetime.fromtimestamp(STOPPED + 240, UTC))
    reconciler = TargetReconciler(stops_target(), source, kube, clock=early)
    if batched:
        assert await prefetch_batched(reconciler.plan_fetches(early()), source) >= 2
    report = await reconciler.reconcile()
    assert report.signals[0].problem is None  # 4 minutes old: fresh
    state = reconciler._signals["kv_cache"]
    kept = state.values
    assert state.last is not None
    copies = kept[-round((state.last - STOPPED) / 60.0) :]
    assert copies.size == 4 and np.isnan(copies).all()  # lookback copies, not data
    assert kept[-5] == pytest.approx(1.8)  # the last real sample

    # 6 minutes after the last sample, staleAfter 5m: stale, whatever the lookback repeats.
    kube_server.put_object(make_hpa("stops", "nim", 1, 10))
    late = FakeClock(datetime.fromtimestamp(STOPPED + 360 + 30, UTC))
    report = await TargetReconciler(stops_target(), source, kube, clock=late).reconcile()
    problem = report.signals[0].problem
    assert problem is not None and problem.startswith("stale: newest sample is 390s old")
    assert report.reason == "FailedGetMetric"
    assert min_replicas(kube_server, "stops") == 1  # no raise on frozen data


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(("running", "expected"), [(4, 3), (2, 2)])
async def test_fewer_pods_reporting_than_running_never_lowers(
    kube_server: KubeDouble,
    kube: KubeClient,
    source: PrometheusSource,
    clock: FakeClock,
    batched: bool,
    running: int,
    expected: int,
) -> None:
    # Issue 12 item 7: half the pods' series vanished; the demand they leave is a lower bound.
    annotations = {ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "3"}
    kube_server.put_object(
        make_hpa("halved", "nim", 3, 10, annotations=annotations, current_replicas=running)
    )
    reconciler = TargetReconciler(target("halved"), source, kube, clock=clock)
    reconciler.history = DecisionHistory(tracking_since=clock() - timedelta(hours=1))
    if batched:
        assert await prefetch_batched(reconciler.plan_fetches(clock()), source) >= 3
    report = await reconciler.reconcile()
    assert min_replicas(kube_server, "halved") == expected
    signal = report.signals[0]
    assert signal.problem is None and signal.reporting_pods == 2
    assert signal.upper_max == pytest.approx(0.7)
    if running > 2:
        assert signal.partial == "2 of 4 pods reporting"
        assert report.reason == "PartialMetrics"
    else:
        assert signal.partial is None  # every running pod reports: the demand is complete


async def test_too_short_history_holds_instead_of_forecasting(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource
) -> None:
    # Half an hour after the data starts, with minHistory 1d: a data problem, not a forecast.
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    busy = target("busy")
    short = replace(busy, policy=replace(busy.policy, min_history_seconds=86_400.0))
    early = FakeClock(datetime.fromtimestamp(DATA_END - 2 * 86400 + 1800 + 60, UTC))
    report = await TargetReconciler(short, source, kube, clock=early).reconcile()
    problem = report.signals[0].problem
    assert problem is not None and problem.startswith("history too short: 0.6h observed")
    assert report.reason == "FailedGetMetric"
    assert min_replicas(kube_server, "busy") == 1  # no raise on too little data


async def test_conflict_is_retried_with_a_fresh_read(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    kube_server.fail_next("PATCH", "/horizontalpodautoscalers/nim$", 409, times=2)
    report = await TargetReconciler(target("busy"), source, kube, clock=clock).reconcile()
    assert report.patch_result == "applied"
    assert min_replicas(kube_server, "busy") == 3
    gets = [r for r in kube_server.requests if r.method == "GET" and "horizontalpod" in r.path]
    assert len(gets) == 3  # the first read and one re-read per conflict


async def test_user_edit_becomes_the_new_base(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("idle", "nim", 1, 10))
    reconciler = TargetReconciler(target("idle"), source, kube, clock=clock)
    await reconciler.reconcile()
    edited = hpa(kube_server, "idle")
    edited["spec"]["minReplicas"] = 4  # type: ignore[index]
    kube_server.put_object(edited)  # kubectl edit
    clock.advance(STEP)
    report = await reconciler.reconcile()
    assert report.base_min_replicas == 4 and report.recommended == 4
    notes = hpa(kube_server, "idle")["metadata"]["annotations"]  # type: ignore[index]
    assert notes[ANNOTATION_BASE_MIN_REPLICAS] == "4"
    assert min_replicas(kube_server, "idle") == 4  # never below the user's value


async def test_dry_run_decides_on_its_shadow_and_obeys_a_hand_edit(
    kube_server: KubeDouble, kube: KubeClient, source: PrometheusSource, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    reconciler = TargetReconciler(target("busy"), source, kube, clock=clock, dry_run=True)
    first = await reconciler.reconcile()
    assert (first.recommended, first.patch_result, first.applied) == (3, "dry_run", 1)
    clock.advance(STEP)
    steady = await reconciler.reconcile()
    # As live: it starts from the 3 it would have set, so there is nothing to change.
    assert (steady.min_replicas_before, steady.recommended, steady.patch_result) == (3, 3, None)
    edited = hpa(kube_server, "busy")
    edited["spec"]["minReplicas"] = 5  # type: ignore[index]
    kube_server.put_object(edited)  # kubectl edit: the user's value becomes the base
    clock.advance(STEP)
    report = await reconciler.reconcile()
    assert (report.base_min_replicas, report.recommended) == (5, 5)
    assert min_replicas(kube_server, "busy") == 5
    assert not [r for r in kube_server.requests if r.method in ("PATCH", "POST")]


@pytest.mark.parametrize("where", ["closed-port", "empty"])
async def test_missing_data_never_lowers_min_replicas_during_the_hold(
    kube_server: KubeDouble,
    kube: KubeClient,
    source: PrometheusSource,
    closed_source: PrometheusSource,
    clock: FakeClock,
    where: str,
) -> None:
    namespace = "busy" if where == "closed-port" else "empty"
    annotations = {ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "6"}
    kube_server.put_object(make_hpa(namespace, "nim", 6, 10, annotations=annotations))
    used = closed_source if where == "closed-port" else source
    reconciler = TargetReconciler(target(namespace), used, kube, clock=clock)
    hold = target(namespace).policy.missing_data_hold_seconds
    seen = []
    for _ in range(int(hold / STEP)):
        report = await reconciler.reconcile()
        assert not report.signals[0].data_ok and report.signals[0].problem
        seen.append(min_replicas(kube_server, namespace))
        clock.advance(STEP)
    assert seen == [6] * len(seen)
    reason = hpa(kube_server, namespace)["metadata"]["annotations"][ANNOTATION_REASON]  # type: ignore[index]
    assert reason.startswith("FailedGetMetric")
    # After the hold it hands back to the HPA step by step, never below the base.
    for _ in range(10):
        await reconciler.reconcile()
        clock.advance(STEP)
    assert min_replicas(kube_server, namespace) == 1


# ---------------------------------------------------------------- controller


async def test_two_models_in_one_namespace_each_get_their_own_pods(
    kube_server: KubeDouble, controller: Controller
) -> None:
    # Issue 12 item 4: without selectors both targets summed both models' pods (2.0 each).
    # Their pods now come from each HPA's scale target (its Deployment's selector).
    for app in ("llama", "mistral"):
        kube_server.put_object(make_deployment("shared", app, {"app": app}, replicas=2))
        kube_server.put_object(make_hpa("shared", app, 1, 10, deployment=app))
    config = """
defaults: {interval: 5m, step: 5m, history: 1d, minHistory: 1h, warmup: 10m,
  model: persistence, seasons: [], refitInterval: 1h}
targets:
  - hpa: {namespace: shared, name: llama}
  - hpa: {namespace: shared, name: mistral}
"""
    controller.apply_config(parse_config(config))
    reports = {r.hpa: r for r in await controller.run_due()}
    assert reports["llama"].signals[0].upper_max == pytest.approx(1.8)
    assert reports["mistral"].signals[0].upper_max == pytest.approx(0.2)
    assert (
        min_replicas(kube_server, "shared", "llama"),
        min_replicas(kube_server, "shared", "mistral"),
    ) == (3, 1)
    scale_reads = [r for r in kube_server.requests if r.path.endswith("/scale")]
    assert len(scale_reads) == 2 and all(r.status == 200 for r in scale_reads)


def _forecast_lines(controller: Controller) -> list[str]:
    text = controller.metrics.generate_latest().decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith(
            ("predictive_scaler_forecast_upper{", "predictive_scaler_forecast_mean{")
        )
        and 'target="busy/nim"' in line
    ]


async def test_a_forecast_is_withdrawn_once_its_data_is_stale(
    kube_server: KubeDouble, controller: Controller, clock: FakeClock
) -> None:
    # Issue 12 item 2: a frozen forecast kept being served (and an HPA on the External metric
    # kept the raised capacity). Past staleAfter (15m) of the newest sample, it is withdrawn.
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    controller.apply_config(parse_config(CONFIG.split("  - hpa: {namespace: idle", maxsplit=1)[0]))
    await controller.run_due()
    assert len(_forecast_lines(controller)) == 2
    assert controller.metrics.published("predictive_scaler_forecast_upper")
    # No cycle runs (a hung dependency, a lost leader): the store itself withdraws it on time.
    clock.advance(16 * 60)
    assert _forecast_lines(controller) == []
    assert controller.metrics.published("predictive_scaler_forecast_upper") == []
    # A cycle on the stale data publishes no forecast either; the decision's figures stay.
    # (Further on: Prometheus' lookback repeats the last sample onto the next 5m step.)
    clock.advance(10 * 60)
    await controller.run_due(force=True)
    assert _forecast_lines(controller) == []
    assert controller.metrics.published("predictive_scaler_forecast_upper") == []
    assert controller.metrics.published("predictive_scaler_recommended_min_replicas")
    data_ok = controller.metrics.published("predictive_scaler_data_ok")
    assert [v.value for v in data_ok if v.labels["target"] == "busy/nim"] == [0.0]


async def test_removed_and_disabled_targets_get_their_base_back(
    kube_server: KubeDouble, controller: Controller, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa("busy", "nim", 2, 10))
    kube_server.put_object(make_hpa("idle", "nim", 1, 10))
    controller.apply_config(parse_config(CONFIG.split("  - hpa: {namespace: empty", maxsplit=1)[0]))
    await controller.run_due()
    assert min_replicas(kube_server, "busy") == 3

    removed = CONFIG.replace("namespace: busy", "namespace: gone")
    controller.apply_config(parse_config(removed))
    clock.advance(STEP)
    await controller.run_due()
    stored = hpa(kube_server, "busy")
    assert stored["spec"]["minReplicas"] == 2  # type: ignore[index]
    assert not set(MANAGED_ANNOTATIONS) & set(stored["metadata"].get("annotations") or {})  # type: ignore[union-attr,attr-defined]
    assert kube_server.list_events("busy")[-1]["reason"] == "BaseRestored"
    assert controller.pending_restores == {} or ("busy", "nim") not in controller.pending_restores
    gauges = [
        line
        for line in controller.metrics.generate_latest().decode().splitlines()
        if 'target="busy/nim"' in line and "_total" not in line and "_created" not in line
    ]
    assert gauges == []  # its gauges are gone (counters keep their totals)

    # Disabling works the same way, once.
    await controller.run_due(force=True)
    disabled = CONFIG.replace(
        "  - hpa: {namespace: idle, name: nim}\n",
        "  - hpa: {namespace: idle, name: nim}\n    enabled: false\n",
    )
    kube_server.put_object(
        make_hpa(
            "idle",
            "nim",
            5,
            10,
            annotations={ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "5"},
        )
    )
    controller.apply_config(parse_config(disabled))
    await controller.run_due()
    assert min_replicas(kube_server, "idle") == 1
    writes = len([r for r in kube_server.requests if r.method == "PATCH"])
    await controller.run_due(force=True)
    assert (
        len([r for r in kube_server.requests if r.method == "PATCH" and "/idle/" in r.path])
        <= writes
    )


async def test_a_target_disabled_in_the_first_config_gets_its_base_back(
    kube_server: KubeDouble, controller: Controller
) -> None:
    # A controller restarted with the target already disabled: it never managed it in this
    # process, but the HPA still carries the raise of an earlier run.
    kube_server.put_object(
        make_hpa(
            "idle",
            "nim",
            5,
            10,
            annotations={ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "5"},
        )
    )
    first = CONFIG.replace(
        "  - hpa: {namespace: idle, name: nim}\n",
        "  - hpa: {namespace: idle, name: nim}\n    enabled: false\n",
    )
    controller.apply_config(parse_config(first))
    await controller.run_due()
    stored = hpa(kube_server, "idle")
    assert stored["spec"]["minReplicas"] == 1  # type: ignore[index]
    assert not set(MANAGED_ANNOTATIONS) & set(stored["metadata"].get("annotations") or {})  # type: ignore[union-attr,attr-defined]
