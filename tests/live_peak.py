"""The live loop's window-peak coverage on a real trace (issue 15), shared by the end-to-end
test (tests/test_live_peak_coverage.py) and the benchmark (benchmarks/live_peak_coverage.py).

A shared trace is backfilled with promtool into a real Prometheus as one demand series ending
a few steps before real now. The real controller (``Controller.run_due``, the API double
behind the real Kubernetes client) runs on a fake clock from ``history`` after the trace's
first point, one cycle per trace step, with the configuration defaults that matter here:
warm-up 10m, interval 30s (so each window is warm-up plus one interval, as in production),
p90, ``auto``, 7 days of history, refit every 6 h.

Each cycle's window-peak bound (the signal's ``upper_max``) is scored here against the
trace's own realised peak over the window the controller forecast (the steps after its
newest point, up to now + warm-up + interval), independently of the controller's own
scoring; the controller's published ``predictive_scaler_forecast_peak_coverage`` is read
too, so the two can be compared.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.forecasting import steps_covering
from predictive_scaler.kube import KubeClient
from predictive_scaler.reconcile import LIVE_ERROR_WINDOW
from predictive_scaler.runtime import Controller
from predictive_scaler.traces import load_trace
from tests.kube_double import KubeDouble, make_deployment, make_hpa
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock

FloatArray = npt.NDArray[np.float64]

NS = "live"
HPA = "app"
WARMUP = 600.0
INTERVAL = 30.0
PEAK_METRIC = "predictive_scaler_forecast_peak_coverage"


@dataclass(frozen=True)
class LiveTrace:
    name: str
    step: float
    timestamps: FloatArray
    values: FloatArray
    """Demand in pods' worth (NaN: missing, not written to Prometheus)."""

    def at(self, when: float) -> float:
        index = round((when - float(self.timestamps[0])) / self.step)
        return float(self.values[index]) if 0 <= index < self.values.size else math.nan


def live_trace(path: Path, *, days: float | None = None) -> LiveTrace:
    """The trace (its last ``days`` when given) scaled to a p99 of 10 pods' worth, its last
    point two steps before real now on the step grid."""
    trace = load_trace(path)
    step = trace.step_seconds
    values = np.asarray(trace.values, dtype=np.float64)
    if days is not None:
        values = values[-round(days * 86_400 / step) :]
    p99 = float(np.nanpercentile(values, 99))
    scaled = np.round(values / p99 * 10.0, 6)
    end = math.floor(time.time() / step) * step - 2 * step
    timestamps = end - step * np.arange(values.size - 1, -1, -1, dtype=np.float64)
    return LiveTrace(path.name, step, timestamps, scaled)


def demand_series(trace: LiveTrace) -> list[Series]:
    labels = {"namespace": NS, "pod": f"{HPA}-0", "app": HPA}
    return [("demand", labels, trace.timestamps, trace.values)]


def config_text(step: float) -> str:
    stale = max(900.0, 2 * step)
    return f"""
defaults:
  interval: {INTERVAL:g}s
  step: {step:g}s
  staleAfter: {stale:g}s
  warmup: {WARMUP:g}s
  history: 7d
  quantile: 0.9
  model: auto
  refitInterval: 6h
targets:
  - hpa: {{namespace: {NS}, name: {HPA}}}
    signals:
      - name: demand
        query: 'sum(demand{{${{matchers}}}})'
        targetPerPod: 1
"""


@dataclass
class LiveRun:
    trace: str
    step: float
    cycle_seconds: float
    window_steps: int
    """Steps of the first cycle's window (later ones may be a step longer: the newest point
    ages between steps when cycles come more often than steps)."""
    cycles: int = 0
    forecasts: int = 0
    covered: list[bool] = field(default_factory=list)
    """Per scored window, in order: realised peak at or below the bound."""
    step_covered: list[bool] = field(default_factory=list)
    """Per scored window: the last step's actual at or below the upper quantile there."""
    due_at: list[float] = field(default_factory=list)
    """Per scored window: epoch seconds of its last step."""
    newest: float = math.nan
    """The newest point the last cycle saw."""
    gauge: list[float] = field(default_factory=list)
    """The published live window-peak coverage after each cycle that had one."""
    seconds: float = 0.0

    @property
    def peak_coverage(self) -> float:
        return float(np.mean(self.covered)) if self.covered else math.nan

    @property
    def step_coverage(self) -> float:
        return float(np.mean(self.step_covered)) if self.step_covered else math.nan

    @property
    def controller_view(self) -> float:
        """What the controller's rolling figure should read after the last cycle: the newest
        ``LIVE_ERROR_WINDOW`` windows that had come due by then (a window is due once its
        last step is the newest point)."""
        due = [c for c, at in zip(self.covered, self.due_at, strict=True) if at <= self.newest]
        tail = due[-LIVE_ERROR_WINDOW:]
        return float(np.mean(tail)) if tail else math.nan


async def run_live(
    trace: LiveTrace,
    prometheus: PrometheusServer,
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    *,
    history_days: float = 7.0,
    cycle_seconds: float | None = None,
    cycles: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LiveRun:
    """Run a cycle every ``cycle_seconds`` (default: one per step) from ``history_days`` after
    the trace's first point to its end (or for ``cycles``), scoring each forecast window
    against the trace."""
    step = trace.step
    every = cycle_seconds or step
    kube_server.put_object(make_deployment(NS, HPA))
    kube_server.put_object(make_hpa(NS, HPA, 1, 200, "1", current_replicas=1))
    # One second past a grid point: the newest point is that one, 1 s old.
    first = float(trace.timestamps[0]) + history_days * 86_400 + 1.0
    total = math.floor((float(trace.timestamps[-1]) + step - 1.0 - first) / every) + 1
    total = total if cycles is None else min(total, cycles)
    clock = FakeClock(datetime.fromtimestamp(first, UTC))
    controller = Controller(KubeClient(kube_api), prometheus_url=prometheus.url, clock=clock)
    controller.apply_config(parse_config(config_text(step)))
    run = LiveRun(trace.name, step, every, steps_covering(WARMUP + INTERVAL + 1.0, step))
    started = time.perf_counter()
    try:
        for cycle in range(total):
            [report] = await controller.run_due(force=True)
            run.cycles += 1
            [signal] = report.signals
            now = clock().timestamp()
            newest = math.floor(now / step) * step
            run.newest = newest
            # The controller's window: from the step after the newest point to
            # now + warm-up + interval (ForecastSettings.steps_to_cover).
            window = steps_covering(WARMUP + INTERVAL + (now - newest), step)
            if signal.upper_max is not None and signal.problem is None:
                run.forecasts += 1
                seen = [trace.at(newest + k * step) for k in range(1, window + 1)]
                if all(math.isfinite(v) for v in seen):
                    run.covered.append(max(seen) <= signal.upper_max + 1e-9)
                    run.due_at.append(newest + window * step)
                    assert signal.upper_at_horizon is not None
                    run.step_covered.append(seen[-1] <= signal.upper_at_horizon + 1e-9)
            published = controller.metrics.published(PEAK_METRIC)
            if published:
                run.gauge.append(published[0].value)
            clock.advance(every)
            if progress is not None:
                progress(cycle + 1, total)
    finally:
        await controller.aclose()
    run.seconds = time.perf_counter() - started
    return run
