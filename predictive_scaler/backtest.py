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
- a missing step (NaN: a collection gap, not idleness) is missing for every lane: the HPA,
  with no metric, keeps its replicas (a minReplicas above them still raises them, as the
  HPA controller does before reading metrics); the controller sees no sample and, once its
  newest one is older than ``staleAfter``, holds minReplicas (``missingDataHold``), then
  decays, as the live loop does; PHPA skips the step; missing steps are not scored (nobody
  knows their demand), and the pods that run through them are paid for.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models import InsufficientHistory, fit_model
from predictive_scaler.baselines import (
    BASELINES,
    HPA_TARGET,
    PHPA,
    SCHEDULE,
    STATIC_FLOOR,
    HoltWintersAdditive,
    IsoCost,
    SweepSettings,
    compute_iso_cost,
    compute_schedule_floor,
    compute_static_floors,
)
from predictive_scaler.config import Policy
from predictive_scaler.decision import (
    DecisionHistory,
    DecisionPolicy,
    HpaLimits,
    SignalForecast,
    decide_min_replicas,
)
from predictive_scaler.demand import compute_demand
from predictive_scaler.forecasting import ForecastSettings, TargetForecaster, steps_for
from predictive_scaler.policy_settings import decision_policy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[int, int], None]
HeadroomChooser = Callable[[FloatArray], float | None]
"""At each refit, the demand Prometheus held up to that step (the fit's window) -> the
quantile to decide on until the next refit (None: keep the settings' quantile)."""

POLICIES = ("reactive", "predictive", "oracle")


DEFAULT_POLICY: Final = Policy()
"""A target's policy when the configuration overrides nothing: the one source of the
simulation's defaults (and so of the backtest's flags)."""


@dataclass(frozen=True)
class SimulationSettings:
    """The what-if scenario. The controller's knobs default to :data:`DEFAULT_POLICY`; build
    them from a target's policy with :func:`simulation_settings`."""

    target: float = 0.7
    """The HPA's target KV-cache usage per pod."""
    peak_replicas: int = 20
    """Replicas the trace's 99th percentile needs."""
    min_replicas: int = 1
    max_replicas: int = 60
    warmup_seconds: float = DEFAULT_POLICY.warmup_seconds
    cycle_seconds: float = DEFAULT_POLICY.interval_seconds
    tolerance: float = 0.1
    stabilization_seconds: float = 300.0
    model: str = DEFAULT_POLICY.model
    quantile: float = DEFAULT_POLICY.quantile
    floor_quantile: float = DEFAULT_POLICY.floor_quantile
    """The history floor's quantile (0: off), learned at each refit as the live loop does."""
    stale_after_seconds: float = DEFAULT_POLICY.stale_after_seconds
    """A newest sample older than this is stale: the controller holds, as live."""
    seasons: tuple[str, ...] = DEFAULT_POLICY.seasons
    history_seconds: float = DEFAULT_POLICY.history_seconds
    refit_interval_seconds: float = DEFAULT_POLICY.refit_interval_seconds
    decision: DecisionPolicy = field(default_factory=lambda: decision_policy(DEFAULT_POLICY))

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise ValueError(f"target must be > 0, got {self.target}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 1 <= min replicas ({self.min_replicas}) <= max ({self.max_replicas})"
            )
        if self.peak_replicas < 1:
            raise ValueError(f"peak replicas must be >= 1, got {self.peak_replicas}")


def simulation_settings(
    policy: Policy,
    *,
    target: float = 0.7,
    peak_replicas: int = 20,
    min_replicas: int = 1,
    max_replicas: int = 60,
) -> SimulationSettings:
    """The scenario of a target's ``policy`` (warm-up, interval, model, quantile, seasons,
    history, refit and the decision's steps and delays) on an HPA with these values."""
    return SimulationSettings(
        target=target,
        peak_replicas=peak_replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        warmup_seconds=policy.warmup_seconds,
        cycle_seconds=policy.interval_seconds,
        model=policy.model,
        quantile=policy.quantile,
        floor_quantile=policy.floor_quantile,
        stale_after_seconds=policy.stale_after_seconds,
        seasons=policy.seasons,
        history_seconds=policy.history_seconds,
        refit_interval_seconds=policy.refit_interval_seconds,
        decision=decision_policy(policy),
    )


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
class FrontierPoint:
    """One swept setting of a policy: its knob and its cost and shortfall."""

    knob: float
    gpu_hours: float
    underprovisioned_minutes: float
    unserved_pod_minutes: float = 0.0
    """Demand above the ready pods, in pods' worth, summed over the window's minutes."""


@dataclass(frozen=True)
class SimulationResult:
    demand: FloatArray
    step_seconds: float
    eval_start: int
    runs: dict[str, PolicyRun]
    notes: tuple[str, ...] = ()
    frontier: dict[str, tuple[FrontierPoint, ...]] = field(default_factory=dict)
    """Per policy (predictive, the baselines, oracle), every swept setting, in sweep order;
    empty without a sweep."""
    headroom: tuple[tuple[int, float], ...] = ()
    """With a headroom chooser: (step, quantile) at each refit, the ``"objective"`` run's
    quantile from that step on."""

    def iso_cost(self) -> dict[str, IsoCost]:
        """Each baseline's shortfall at predictive's default GPU-hours, and the ratio."""
        p = self.runs["predictive"]
        return {
            name: compute_iso_cost(
                [(pt.gpu_hours, pt.underprovisioned_minutes) for pt in self.frontier[name]],
                p.gpu_hours,
                p.underprovisioned_minutes,
            )
            for name in BASELINES
            if name in self.frontier
        }


def scale_demand(values: FloatArray, target: float, peak_replicas: int) -> FloatArray:
    """``value / p99(value) * peak_replicas * target``, the p99 of the observed points; a
    missing point (NaN) stays missing: a gap in collection is not a lull in demand."""
    arr = np.asarray(values, dtype=np.float64)
    observed = arr[np.isfinite(arr)]
    p99 = float(np.percentile(observed, 99)) if observed.size else 0.0
    if p99 <= 0:
        raise ValueError("the trace's 99th percentile is 0: nothing to scale")
    scaled: FloatArray = arr / p99 * peak_replicas * target
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
        # ``pods`` stays sorted: new pods are ready last, and a scale-down keeps a prefix.
        return bisect.bisect_right(self.pods, t)

    def desired(self, t: int, demand: float, min_replicas: int) -> int:
        """The count the HPA computes from the saturated gauge at ``t`` (no side effects)."""
        s = self.s
        ready, total = self.ready(t), len(self.pods)
        observed = min(demand, ready)
        if observed <= 0:
            return min_replicas
        if ready > 0 and abs(observed / ready / s.target - 1.0) <= s.tolerance:
            return total
        return math.ceil(observed / s.target - 1e-9)

    def act(self, t: int, demand: float, min_replicas: int) -> None:
        s = self.s
        total = len(self.pods)
        if not math.isfinite(demand):
            # No metric: the HPA computes nothing and keeps its replicas, only bringing them
            # into [min, max] (which it does before reading any metric).
            self._resize(t, min(max(total, min_replicas), s.max_replicas))
            return
        desired = self.desired(t, demand, min_replicas)
        self.recommendations.append((t, desired))
        while self.recommendations[0][0] <= t - self.window_steps:
            self.recommendations.popleft()
        # Up at once; down only to the highest recommendation of the window.
        stabilized = max(v for _, v in self.recommendations)
        new = desired if desired >= total else min(total, stabilized)
        new = min(max(new, min_replicas), s.max_replicas)
        self._resize(t, new)

    def _resize(self, t: int, new: int) -> None:
        total = len(self.pods)
        if new > total:
            self.pods.extend([t + self.warmup_steps] * (new - total))
        elif new < total:
            # Warming pods go first (newest first), then ready ones.
            self.pods.sort()
            del self.pods[new:]


@dataclass
class _Lane:
    """One policy at one knob value: its HPA, its recorded pods and its own state."""

    policy: str
    knob: float
    hpa: SimulatedHpa
    ready: IntArray
    total: IntArray
    mins: IntArray
    floor: IntArray | None = None
    """Precomputed minReplicas per step (oracle, static and schedule floors)."""
    quantile: float | None = None
    """Predictive lanes: the upper quantile they decide on (the objective lane's changes at
    each refit)."""
    hw: HoltWintersAdditive | None = None
    """PHPA lanes: the Holt-Winters on the HPA's computed counts."""
    current_min: int = 1
    history: DecisionHistory = field(default_factory=DecisionHistory)


def simulate(
    values: FloatArray,
    step_seconds: float,
    settings: SimulationSettings,
    progress: Progress | None = None,
    sweep: SweepSettings | None = None,
    headroom: HeadroomChooser | None = None,
) -> SimulationResult:
    """Scale the trace (see :func:`scale_demand`), then :func:`simulate_demand`."""
    demand = scale_demand(values, settings.target, settings.peak_replicas)
    return simulate_demand(demand, step_seconds, settings, progress, sweep, headroom)


def simulate_demand(
    demand: FloatArray,
    step_seconds: float,
    settings: SimulationSettings,
    progress: Progress | None = None,
    sweep: SweepSettings | None = None,
    headroom: HeadroomChooser | None = None,
) -> SimulationResult:
    """Run reactive HPA, predictive and the oracle over ``demand`` (pods' worth of KV
    cache per step), and with ``sweep`` every baseline and predictive over their knobs;
    measure each over the evaluation window. With ``headroom``, an ``"objective"`` run too:
    predictive whose quantile ``headroom`` picks at each refit from the window the fit sees
    (what Prometheus held up to that step, nothing after it).

    All lanes step together, so the forecaster is fitted once per refit for every
    predictive lane: they differ only in the quantile they read from it. The history it
    fits on is the default lane's Prometheus view, which equals the true demand whenever a
    pod is ready (always, as minReplicas >= 1), so it is the same history for every lane.
    """
    demand = np.asarray(demand, dtype=np.float64)
    n = len(demand)
    s = settings
    eval_start = evaluation_start(n, step_seconds)
    warmup = steps_for(s.warmup_seconds, step_seconds)
    cycle = steps_for(s.cycle_seconds, step_seconds)
    control_start = max(1, eval_start - warmup - cycle)
    # One simulated cycle can stand for several live cycles (a 5-minute trace step against a
    # 30 s interval): the live loop would move by a step each of them.
    live_cycles = max(1, round(cycle * step_seconds / s.cycle_seconds))
    policy = replace(
        s.decision,
        scale_up_step=s.decision.scale_up_step * live_cycles,
        scale_down_step=s.decision.scale_down_step * live_cycles,
    )
    forecast_settings = ForecastSettings(
        step_seconds=step_seconds,
        horizon_seconds=(warmup + cycle) * step_seconds,
        model=s.model,
        quantile=s.quantile,
        floor_quantile=s.floor_quantile,
        seasons=s.seasons,
        history_seconds=s.history_seconds,
        refit_interval_seconds=s.refit_interval_seconds,
    )
    forecaster = TargetForecaster(forecast_settings)
    lanes = _make_lanes(demand, step_seconds, s, sweep, warmup, objective=headroom is not None)
    objective = next((lane for lane in lanes if lane.policy == "objective"), None)
    predictive_lanes = [lane for lane in lanes if lane.quantile is not None]
    default_predictive = lanes[1]
    choices: list[tuple[int, float]] = []
    seen = np.full(n, np.nan)  # demand as the controller sees it in Prometheus
    newest = -1  # the last step Prometheus holds a sample for
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    notes: list[str] = []

    for t in range(n):
        for lane in lanes:
            lane.ready[t] = lane.hpa.ready(t)
            lane.total[t] = len(lane.hpa.pods)
        # What Prometheus holds at t for the predictive deployment: the gauge saturates.
        ready_now = default_predictive.ready[t]
        if math.isfinite(demand[t]):
            gauge = min(demand[t], ready_now)
            queue = max(0.0, demand[t] - ready_now)
            seen[t] = compute_demand(np.array([gauge]), np.array([queue]), np.array([gauge]))[0]
            newest = t

        if t >= control_start:
            if forecaster.needs_refit():
                try:
                    window = seen[: t + 1][-forecast_settings.history_points :]
                    result = fit_model(
                        s.model,
                        window,
                        step_seconds,
                        forecast_settings.horizon_steps,
                        s.seasons,
                        s.quantile,
                    )
                    # The floor is learned from the same window, as the live loop does.
                    forecaster.adopt(result, history=window)
                    notes.extend(result.notes)
                except InsufficientHistory as exc:
                    notes.append(str(exc))
                if objective is not None and headroom is not None:
                    # The live loop chooses at each refit, from the window it fits on.
                    objective.quantile = headroom(window.copy()) or s.quantile
                    choices.append((t, objective.quantile))
            else:
                forecaster.observe(seen[t : t + 1])
            if (t - control_start) % cycle == 0:
                quantiles = tuple(
                    sorted({lane.quantile or s.quantile for lane in predictive_lanes})
                )
                uppers = _forecast_uppers(forecaster, quantiles)
                now = origin + timedelta(seconds=t * step_seconds)
                problem = _staleness(t, newest, step_seconds, s.stale_after_seconds)
                for lane in predictive_lanes:
                    assert lane.quantile is not None
                    _decide(lane, uppers, forecaster.floor_, s, policy, now, problem)
        d = float(demand[t])
        for lane in lanes:
            if lane.floor is not None:
                lane.mins[t] = lane.floor[t]
            elif lane.hw is not None:
                if not math.isfinite(d):
                    # PHPA with no metric evaluates nothing: it keeps what it last set.
                    lane.mins[t] = lane.mins[t - 1] if t else s.min_replicas
                    lane.hpa.act(t, d, int(lane.mins[t]))
                    continue
                lane.hw.update(lane.hpa.desired(t, d, s.min_replicas))
                ahead = lane.hw.forecast_next()
                if ahead is not None:
                    lane.mins[t] = min(max(math.ceil(ahead - 1e-9), s.min_replicas), s.max_replicas)
            elif lane.quantile is not None:
                lane.mins[t] = lane.current_min
            lane.hpa.act(t, d, int(lane.mins[t]))
        if progress is not None:
            progress(t + 1, n)

    def measure(lane: _Lane) -> PolicyRun:
        return _measure(demand, lane.ready, lane.total, lane.mins, eval_start, step_seconds)

    def pick(policy_name: str, knob: float) -> _Lane:
        return next(lane for lane in lanes if lane.policy == policy_name and lane.knob == knob)

    runs = {
        "reactive": measure(pick(HPA_TARGET, s.target)),
        "predictive": measure(default_predictive),
        "oracle": measure(pick("oracle", 0.0)),
    }
    if objective is not None:
        runs["objective"] = measure(objective)
    frontier: dict[str, tuple[FrontierPoint, ...]] = {}
    if sweep is not None:
        evaluated = float(np.nansum(demand[eval_start:]))
        for lane in lanes:
            if lane is objective:
                continue
            run = measure(lane)
            point = FrontierPoint(
                lane.knob,
                run.gpu_hours,
                run.underprovisioned_minutes,
                run.unserved_fraction * evaluated * step_seconds / 60.0,
            )
            frontier[lane.policy] = (*frontier.get(lane.policy, ()), point)
    return SimulationResult(
        demand,
        step_seconds,
        eval_start,
        runs,
        tuple(dict.fromkeys(notes)),
        frontier,
        tuple(choices),
    )


def _make_lanes(
    demand: FloatArray,
    step_seconds: float,
    s: SimulationSettings,
    sweep: SweepSettings | None,
    warmup: int,
    *,
    objective: bool = False,
) -> list[_Lane]:
    n = len(demand)

    def lane(policy_name: str, knob: float, target: float | None = None, **kw: Any) -> _Lane:
        hpa_settings = s if target is None else replace(s, target=target)
        return _Lane(
            policy_name,
            knob,
            SimulatedHpa(hpa_settings, step_seconds),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.full(n, s.min_replicas, dtype=np.int64),
            current_min=s.min_replicas,
            **kw,
        )

    def clamp(floor: IntArray) -> IntArray:
        out: IntArray = np.clip(floor, s.min_replicas, s.max_replicas).astype(np.int64)
        return out

    # Oracle: max true demand over t .. t + warm-up + 1, as a running window maximum (of the
    # known steps: a window of missing steps alone needs nothing).
    peak = _window_max(np.where(np.isfinite(demand), demand, -np.inf), warmup + 2)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    need = np.ceil(peak / s.target - 1e-9).astype(np.int64)
    lanes = [
        lane(HPA_TARGET, s.target),
        lane("predictive", s.quantile, quantile=s.quantile),
        lane("oracle", 0.0, floor=clamp(need)),
    ]
    if objective:
        lanes.append(lane("objective", 0.0, quantile=s.quantile))
    if sweep is None:
        return lanes
    for q in sweep.quantiles:
        if q != s.quantile:
            lanes.append(lane("predictive", q, quantile=q))
    if not sweep.baselines:
        return lanes
    for target in sweep.hpa_targets:
        if target != s.target:
            lanes.append(lane(HPA_TARGET, target, target=target))
    for floor in compute_static_floors(s.peak_replicas, sweep.floor_fractions):
        lanes.append(lane(STATIC_FLOOR, floor, floor=clamp(np.full(n, floor, dtype=np.int64))))
    for margin in sweep.schedule_margins:
        schedule = compute_schedule_floor(demand, step_seconds, s.target, margin, warmup)
        lanes.append(lane(SCHEDULE, margin, floor=clamp(schedule)))
    period = steps_for(86_400.0, step_seconds)
    for target in sweep.phpa_targets:
        lanes.append(lane(PHPA, target, target=target, hw=HoltWintersAdditive(period)))
    return lanes


def _forecast_uppers(
    forecaster: TargetForecaster, quantiles: tuple[float, ...]
) -> dict[float, float | None]:
    """Per quantile, the calibrated bound of the window's peak (what the live loop decides
    on, ``WindowForecast.upper_max``); None without a model."""
    model = forecaster.model
    if model is None:
        return dict.fromkeys(quantiles)
    forecast = model.predict(forecaster.settings.horizon_steps, quantiles)
    return {q: forecast.peak(q) for q in quantiles}


def _staleness(t: int, newest: int, step_seconds: float, stale_after_seconds: float) -> str | None:
    """Why the data is unusable at step ``t`` when its newest sample is at ``newest`` (-1:
    none yet), as the live loop says it; None when fresh. Step ``t``'s own sample is fresh:
    the simulator forecasts from the step it has just seen."""
    if newest < 0:
        return "no data: no sample in the history"
    age = (t - newest) * step_seconds
    if age > stale_after_seconds:
        return f"stale: newest sample is {age:.0f}s old"
    return None


def _decide(
    lane: _Lane,
    uppers: dict[float, float | None],
    floor: float | None,
    settings: SimulationSettings,
    policy: DecisionPolicy,
    now: datetime,
    problem: str | None = None,
) -> None:
    assert lane.quantile is not None
    upper = uppers[lane.quantile]
    if problem is not None:
        signal = SignalForecast("kv_cache", None, settings.target, problem)
    elif upper is None:
        signal = SignalForecast("kv_cache", None, settings.target, "no model fitted")
    elif not math.isfinite(upper):
        signal = SignalForecast("kv_cache", None, settings.target, "non-finite forecast")
    else:
        signal = SignalForecast("kv_cache", upper, settings.target, floor=floor)
    decision = decide_min_replicas(
        [signal],
        # The live loop passes the HPA's currentReplicas the same way.
        HpaLimits(
            lane.current_min,
            settings.max_replicas,
            settings.min_replicas,
            current_replicas=len(lane.hpa.pods),
        ),
        policy,
        lane.history,
        now,
    )
    lane.current_min, lane.history = decision.min_replicas, decision.history


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
    # Missing steps are not scored (their demand is unknown); their pods are paid for.
    known = np.isfinite(d)
    d, r = d[known], r[known]
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
