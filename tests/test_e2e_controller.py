"""End to end: a real Prometheus with 8 days of a real trace, the API double, one NIM-like HPA.

The trace is NAB's NYC taxi passengers (30-minute steps, a clear morning ramp on weekdays),
linearly resampled to 5 minutes and scaled so that its 99th percentile needs
``PEAK_REPLICAS`` pods at the HPA's 0.7 target. Demand is split over 4 pods as
``gpu_cache_usage_perc`` capped at 1.0 per pod; what does not fit shows up as
``num_requests_waiting`` against ``num_requests_running`` (the NIM preset's saturation
correction recovers the true demand). The data ends a few minutes before real now; the
controller's clock starts a day earlier and moves one interval per cycle (time travel).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_REASON,
    KubeClient,
)
from predictive_scaler.leader import LeaderElector
from predictive_scaler.runtime import Controller
from predictive_scaler.traces import load_trace
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock, shared_trace

TRACE = shared_trace("nab_nyc_taxi_passengers_30min.csv")
STEP = 300.0
PODS = 4
TARGET_PER_POD = 0.7
PEAK_REPLICAS = 8
WARMUP = 900.0
NS = "llm"
HPA = "nim-llm"
FIRST_DAY = 2  # trace days 2..10: the last two days before the clock starts are weekdays
RUN_HOURS = 24


@dataclass(frozen=True)
class Trace:
    timestamps: npt.NDArray[np.float64]
    demand: npt.NDArray[np.float64]

    @property
    def end(self) -> float:
        return float(self.timestamps[-1])

    def need(self, at: float) -> int:
        index = round((at - float(self.timestamps[0])) / STEP)
        return math.ceil(float(self.demand[index]) / TARGET_PER_POD - 1e-9)


def build_trace() -> Trace:
    raw = load_trace(TRACE).values
    per_day = 48
    segment = raw[FIRST_DAY * per_day : (FIRST_DAY + 8) * per_day + 4 + 1]  # 8 days + 2 h
    coarse = np.arange(segment.size, dtype=np.float64)
    fine = np.arange(0, segment.size - 1 + 1e-9, STEP / 1800.0)
    values = np.interp(fine, coarse, segment)
    demand = values / np.percentile(values, 99) * PEAK_REPLICAS * TARGET_PER_POD
    end = math.floor(time.time() / STEP) * STEP - 2 * STEP  # a few minutes before now
    timestamps = end - STEP * np.arange(demand.size - 1, -1, -1, dtype=np.float64)
    return Trace(timestamps, np.round(demand, 6))


def nim_series(trace: Trace, namespace: str = NS) -> list[Series]:
    usage_sum = np.minimum(trace.demand, float(PODS))
    running_per_pod = 40.0 * usage_sum / PODS
    # Waiting requests make usage * (1 + waiting / running) equal the true demand.
    waiting_per_pod = running_per_pod * (trace.demand / np.maximum(usage_sum, 1e-9) - 1.0)
    series: list[Series] = []
    for i in range(PODS):
        labels = {"namespace": namespace, "pod": f"nim-{i}"}
        ts = trace.timestamps
        series.append(("gpu_cache_usage_perc", labels, ts, np.round(usage_sum / PODS, 6)))
        series.append(("num_requests_running", labels, ts, np.round(running_per_pod, 4)))
        series.append(("num_requests_waiting", labels, ts, np.round(waiting_per_pod, 4)))
    return series


def config_text(*, dry_run: bool = False, name: str = HPA) -> str:
    return f"""
defaults:
  interval: 5m
  step: 5m
  history: 7d
  warmup: 15m
  quantile: 0.9
  model: auto
  seasons: [daily]
  refitInterval: 6h
  scaleUpStep: 4
  scaleDownDelay: 30m
  scaleDownStep: 1
  missingDataHold: 30m
  staleAfter: 15m
  dryRun: {str(dry_run).lower()}
targets:
  - hpa: {{namespace: {NS}, name: {name}}}
    signals:
      - preset: nim
"""


@pytest.fixture(scope="module")
def trace() -> Trace:
    return build_trace()


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory, trace: Trace) -> PrometheusServer:
    return prometheus_factory(nim_series(trace))


def _hpa(server: KubeDouble, name: str = HPA) -> dict[str, object]:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, name)
    assert stored is not None
    return stored


async def test_raises_a_warmup_before_the_ramp_and_lowers_after_the_peak(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusServer,
    trace: Trace,
) -> None:
    kube_server.put_object(make_hpa(NS, HPA, 1, 20, "700m", current_replicas=1))
    start = trace.end - RUN_HOURS * 3600
    clock = FakeClock(datetime.fromtimestamp(start, UTC))
    kube = KubeClient(kube_api, reporting_instance="controller-0")
    elector = LeaderElector(kube, NS, "predictive-scaler", "controller-0", clock=clock)
    controller = Controller(kube, prometheus_url=prometheus.url, clock=clock, elector=elector)
    controller.apply_config(parse_config(config_text()))
    mins: list[tuple[float, int]] = []
    try:
        for _cycle in range(int(RUN_HOURS * 3600 / STEP)):
            assert await controller.renew_leadership()
            [report] = await controller.run_due()
            assert report.error is None
            mins.append((clock().timestamp(), int(_hpa(kube_server)["spec"]["minReplicas"])))
            clock.advance(STEP)
    finally:
        await controller.aclose()

    applied = np.array([m for _, m in mins])
    times = np.array([t for t, _ in mins])
    need = np.array([trace.need(t) for t in times])
    # The morning ramp: what demand needs within the first 8 hours of the run.
    top = int(need[: int(8 * 3600 / STEP)].max())
    assert top >= 5, "the run must cover a ramp that needs several replicas"
    # For every replica count of the ramp from 3 up: minReplicas got there at least one
    # warm-up before demand first needed it.
    early = []
    for level in range(3, top + 1):
        needed_at = float(times[np.argmax(need >= level)])
        reached = times[applied >= level]
        assert reached.size, f"minReplicas never reached {level}"
        early.append(needed_at - float(reached[0]))
    assert min(early) >= WARMUP, f"lead times (s) per level 3..{top}: {early}"
    # ...and handed back to the HPA after the peak.
    peak_index = int(np.argmax(applied))
    assert applied[-1] < applied[peak_index]
    assert applied.min() >= 1 and applied.max() <= 20

    stored = _hpa(kube_server)
    notes = stored["metadata"]["annotations"]
    assert notes[ANNOTATION_BASE_MIN_REPLICAS] == "1"
    assert notes[ANNOTATION_APPLIED_MIN_REPLICAS] == str(applied[-1])
    assert notes[ANNOTATION_MODEL].startswith("auto:")
    assert notes[ANNOTATION_REASON]
    forecast = json.loads(notes[ANNOTATION_LAST_FORECAST])
    assert set(forecast) >= {"mean", "upper", "horizonSeconds", "quantile", "at"}
    assert forecast["horizonSeconds"] == WARMUP + STEP and forecast["quantile"] == 0.9
    assert stored["spec"]["maxReplicas"] == 20  # never touched

    events = [e for e in kube_server.list_events(NS) if e["involvedObject"]["name"] == HPA]
    changes = int(np.count_nonzero(np.diff(np.concatenate([[1], applied]))))
    assert len(events) == changes > 2
    assert all(e["reason"] and e["message"].startswith("minReplicas ") for e in events)
    assert {e["reason"] for e in events} & {"DesiredWithinRange", "ScaleUpLimit"}


async def _run_cycles(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusServer,
    start: float,
    cycles: int,
    *,
    dry_run: bool,
) -> list[int]:
    """minReplicas per cycle: what live applied, or what dry run recommended."""
    kube_server.put_object(make_hpa(NS, HPA, 1, 20, "700m", current_replicas=1))
    clock = FakeClock(datetime.fromtimestamp(start, UTC))
    controller = Controller(KubeClient(kube_api), prometheus_url=prometheus.url, clock=clock)
    controller.apply_config(parse_config(config_text(dry_run=dry_run)))
    seen: list[int] = []
    writes = len([r for r in kube_server.requests if r.method in ("PATCH", "PUT", "POST")])
    try:
        for _cycle in range(cycles):
            [report] = await controller.run_due()
            assert report.error is None
            applied = int(_hpa(kube_server)["spec"]["minReplicas"])
            seen.append(int(report.recommended or 0) if dry_run else applied)
            clock.advance(STEP)
    finally:
        await controller.aclose()
    if dry_run:  # it decided on what it would have applied, and wrote nothing
        after = [r for r in kube_server.requests if r.method in ("PATCH", "PUT", "POST")]
        assert len(after) == writes
        assert int(_hpa(kube_server)["spec"]["minReplicas"]) == 1
    return seen


async def test_dry_run_recommends_exactly_what_live_applies(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusServer,
    trace: Trace,
) -> None:
    # Over a morning ramp and its fall: dry run must decide on the minReplicas it would have
    # applied (a shadow), not on the untouched base, or every raise is capped at
    # base + scaleUpStep and every lowering is skipped.
    times = trace.timestamps[trace.timestamps >= trace.end - RUN_HOURS * 3600]
    ramp = float(next(t for t in times if trace.need(float(t)) >= 6))
    start, cycles = ramp - 2 * 3600, int(8 * 3600 / STEP)
    live = await _run_cycles(kube_server, kube_api, prometheus, start, cycles, dry_run=False)
    assert max(live) > 1 + 4, "the window must need more than one scale-up step"
    assert min(live[-12:]) < max(live), "...and lower again after the peak"
    dry = await _run_cycles(kube_server, kube_api, prometheus, start, cycles, dry_run=True)
    assert dry == live
