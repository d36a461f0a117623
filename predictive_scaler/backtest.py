"""What-if simulator: a demand trace through reactive HPA, this controller and an oracle.

Semantics (fixed so that results can be checked independently):
- steps at the trace's step; durations become steps as round(duration / step), at least 1;
- demand ``d = value / p99(value) * peak_replicas * target`` pods' worth of KV cache;
- the deployment starts at min replicas, all ready; a pod created at step t is ready at
  t + warm-up;
- reactive HPA: observed = min(d, ready); desired = ceil(observed / target) (min when
  observed is 0), unless |observed / ready / target - 1| <= tolerance, when it stays;
  scale up at once; scale down to the highest desired of the stabilisation window; clamp to
  [min, max]; a scale-down removes warming pods before ready ones;
- predictive: the same HPA, with minReplicas set every cycle by the live loop's own
  forecaster and decision code, fed only what Prometheus would hold (the saturated gauge
  sum and the queue);
- oracle: the same HPA with minReplicas = ceil(max d over t .. t + warm-up + 1 / target).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from models import InsufficientHistory
from predictive_scaler.decision import (
    DecisionHistory,
    DecisionPolicy,
    HpaLimits,
    SignalForecast,
    decide_min_replicas,
)
from predictive_scaler.demand import compute_demand
from predictive_scaler.forecasting import ForecastSettings, TargetForecaster, steps_for

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[int, int], None]

POLICIES = ("reactive", "predictive", "oracle")


@dataclass(frozen=True)
class SimulationSettings:
    """The what-if scenario."""

    target: float = 0.7
    """The HPA's target KV-cache usage per pod."""
    peak_replicas: int = 20
    """Replicas the trace's 99th percentile needs."""
    min_replicas: int = 1
    max_replicas: int = 60
    warmup_seconds: float = 600.0
    cycle_seconds: float = 30.0
    tolerance: float = 0.1
    stabilization_seconds: float = 300.0
    model: str = "auto"
    quantile: float = 0.9
    seasons: tuple[str, ...] = ("daily", "weekly")
    history_seconds: float = 7 * 86_400.0
    refit_interval_seconds: float = 21_600.0
    decision: DecisionPolicy = field(default_factory=DecisionPolicy)

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise ValueError(f"target must be > 0, got {self.target}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 1 <= min replicas ({self.min_replicas}) <= max ({self.max_replicas})"
            )
        if self.peak_replicas < 1:
            raise ValueError(f"peak replicas must be >= 1, got {self.peak_replicas}")


@dataclass(frozen=True)
class PolicyRun:
    """One policy's pods over time and its figures over the evaluation window."""

    ready: IntArray
    total: IntArray
    min_replicas: IntArray
    underprovisioned_minutes: float
    unserved_fraction: float
    gpu_hours: float
    scale_events: int

    def figures(self) -> dict[str, float]:
        return {
            "underprovisioned_minutes": self.underprovisioned_minutes,
            "unserved_fraction": self.unserved_fraction,
            "gpu_hours": self.gpu_hours,
            "scale_events": self.scale_events,
        }


@dataclass(frozen=True)
class SimulationResult:
    demand: FloatArray
    step_seconds: float
    eval_start: int
    runs: dict[str, PolicyRun]
    notes: tuple[str, ...] = ()


def scale_demand(values: FloatArray, target: float, peak_replicas: int) -> FloatArray:
    """``value / p99(value) * peak_replicas * target``; missing points count as no demand."""
    clean = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    p99 = float(np.percentile(clean, 99))
    if p99 <= 0:
        raise ValueError("the trace's 99th percentile is 0: nothing to scale")
    scaled: FloatArray = clean / p99 * peak_replicas * target
    return scaled


def evaluation_start(n: int, step_seconds: float) -> int:
    """The window starts at min(7 days, half the trace)."""
    return min(steps_for(7 * 86_400.0, step_seconds), n // 2)


class SimulatedHpa:
    """The reactive HPA of the semantics above, one step at a time."""

    def __init__(self, settings: SimulationSettings, step_seconds: float) -> None:
        self.s = settings
        self.warmup_steps = steps_for(settings.warmup_seconds, step_seconds)
        self.window_steps = steps_for(settings.stabilization_seconds, step_seconds)
        self.pods: list[int] = [0] * settings.min_replicas  # step at which each is ready
        self.recommendations: deque[tuple[int, int]] = deque()

    def ready(self, t: int) -> int:
        return sum(1 for at in self.pods if at <= t)

    def act(self, t: int, demand: float, min_replicas: int) -> None:
        s = self.s
        ready, total = self.ready(t), len(self.pods)
        observed = min(demand, ready)
        if observed <= 0:
            desired = min_replicas
        elif ready > 0 and abs(observed / ready / s.target - 1.0) <= s.tolerance:
            desired = total
        else:
            desired = math.ceil(observed / s.target - 1e-9)
        self.recommendations.append((t, desired))
        while self.recommendations[0][0] <= t - self.window_steps:
            self.recommendations.popleft()
        # Up at once; down only to the highest recommendation of the window.
        stabilized = max(v for _, v in self.recommendations)
        new = desired if desired >= total else min(total, stabilized)
        new = min(max(new, min_replicas), s.max_replicas)
        if new > total:
            self.pods.extend([t + self.warmup_steps] * (new - total))
        elif new < total:
            # Warming pods go first (newest first), then ready ones.
            self.pods.sort()
            del self.pods[new:]


def simulate(
    values: FloatArray,
    step_seconds: float,
    settings: SimulationSettings,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run the three policies over the trace and measure them over the evaluation window."""
    demand = scale_demand(values, settings.target, settings.peak_replicas)
    n = len(demand)
    eval_start = evaluation_start(n, step_seconds)
    warmup = steps_for(settings.warmup_seconds, step_seconds)
    cycle = steps_for(settings.cycle_seconds, step_seconds)
    control_start = max(1, eval_start - warmup - cycle)
    # One simulated cycle can stand for several live cycles (a 5-minute trace step against a
    # 30 s interval): the live loop would move by a step each of them.
    live_cycles = max(1, round(cycle * step_seconds / settings.cycle_seconds))
    policy = replace(
        settings.decision,
        scale_up_step=settings.decision.scale_up_step * live_cycles,
        scale_down_step=settings.decision.scale_down_step * live_cycles,
    )

    forecaster = TargetForecaster(
        ForecastSettings(
            step_seconds=step_seconds,
            horizon_seconds=(warmup + cycle) * step_seconds,
            model=settings.model,
            quantile=settings.quantile,
            seasons=settings.seasons,
            history_seconds=settings.history_seconds,
            refit_interval_seconds=settings.refit_interval_seconds,
        )
    )
    hpas = {name: SimulatedHpa(settings, step_seconds) for name in POLICIES}
    ready = {name: np.zeros(n, dtype=np.int64) for name in POLICIES}
    total = {name: np.zeros(n, dtype=np.int64) for name in POLICIES}
    mins = {name: np.full(n, settings.min_replicas, dtype=np.int64) for name in POLICIES}
    seen = np.full(n, np.nan)  # demand as the controller sees it in Prometheus
    history = DecisionHistory()
    predictive_min = settings.min_replicas
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    notes: list[str] = []
    # Oracle: max true demand over t .. t + warm-up + 1, as a running window maximum.
    oracle_need = _window_max(demand, warmup + 2)

    for t in range(n):
        for name, hpa in hpas.items():
            ready[name][t] = hpa.ready(t)
            total[name][t] = len(hpa.pods)
        # What Prometheus holds at t for the predictive deployment: the gauge saturates.
        gauge = min(demand[t], ready["predictive"][t])
        queue = max(0.0, demand[t] - ready["predictive"][t])
        seen[t] = compute_demand(np.array([gauge]), np.array([queue]), np.array([gauge]))[0]

        if t >= control_start:
            if forecaster.needs_refit():
                try:
                    result = forecaster.refit(seen[: t + 1])
                    notes.extend(result.notes)
                except InsufficientHistory as exc:
                    notes.append(str(exc))
            else:
                forecaster.observe(seen[t : t + 1])
            if (t - control_start) % cycle == 0:
                predictive_min, history = _decide(
                    forecaster,
                    settings,
                    policy,
                    (predictive_min, len(hpas["predictive"].pods)),
                    history,
                    origin,
                    t,
                    step_seconds,
                )
        mins["predictive"][t] = predictive_min
        mins["oracle"][t] = min(
            max(math.ceil(oracle_need[t] / settings.target - 1e-9), settings.min_replicas),
            settings.max_replicas,
        )
        for name, hpa in hpas.items():
            hpa.act(t, float(demand[t]), int(mins[name][t]))
        if progress is not None:
            progress(t + 1, n)

    runs = {
        name: _measure(demand, ready[name], total[name], mins[name], eval_start, step_seconds)
        for name in POLICIES
    }
    return SimulationResult(demand, step_seconds, eval_start, runs, tuple(dict.fromkeys(notes)))


def _decide(
    forecaster: TargetForecaster,
    settings: SimulationSettings,
    policy: DecisionPolicy,
    current: tuple[int, int],
    history: DecisionHistory,
    origin: datetime,
    t: int,
    step_seconds: float,
) -> tuple[int, DecisionHistory]:
    if forecaster.model is None:
        signal = SignalForecast("kv_cache", None, settings.target, "no model fitted")
    else:
        window = forecaster.forecast()
        signal = SignalForecast("kv_cache", window.upper_max, settings.target)
    # (min, pods the HPA runs): the live loop passes the HPA's currentReplicas the same way.
    decision = decide_min_replicas(
        [signal],
        HpaLimits(
            current[0], settings.max_replicas, settings.min_replicas, current_replicas=current[1]
        ),
        policy,
        history,
        origin + timedelta(seconds=t * step_seconds),
    )
    return decision.min_replicas, decision.history


def _window_max(x: FloatArray, width: int) -> FloatArray:
    """out[t] = max(x[t : t + width]), clipped at the end."""
    padded = np.concatenate([x, np.full(width - 1, -np.inf)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    out: FloatArray = windows.max(axis=1)
    return out


def _measure(
    demand: FloatArray,
    ready: IntArray,
    total: IntArray,
    mins: IntArray,
    start: int,
    step_seconds: float,
) -> PolicyRun:
    d, r, tot = demand[start:], ready[start:], total[start:]
    short = d > r
    served_gap = np.maximum(d - r, 0.0)
    changes = np.diff(total[start - 1 :] if start > 0 else tot) != 0
    return PolicyRun(
        ready=ready,
        total=total,
        min_replicas=mins,
        underprovisioned_minutes=float(short.sum() * step_seconds / 60.0),
        unserved_fraction=float(served_gap.sum() / d.sum()) if d.sum() > 0 else 0.0,
        gpu_hours=float(tot.sum() * step_seconds / 3600.0),
        scale_events=int(changes.sum()),
    )
