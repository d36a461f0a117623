"""The cheap alternatives a user could configure instead of this controller, and the
comparison at equal cost. Pure: numbers in, numbers out; no I/O, no clock, no logging.

- a lower HPA target (more headroom on the same reactive HPA);
- a static ``minReplicas`` floor;
- an hour-of-week schedule floor (a KEDA cron trigger set from last week's peaks): for each
  hour, the peak demand of the same hour one week earlier (one day earlier while less than a
  week is known) times a margin, in replicas at the HPA's target, applied one warm-up early
  as a cron schedule would be, and only from hours that are over by then (causal);
- PHPA (jthomperoo/predictive-horizontal-pod-autoscaler) as documented: additive
  Holt-Winters on the replica counts the HPA computes each sync, alpha = beta = gamma = 0.9,
  predicting one sync ahead, taking the maximum of the prediction and the HPA's own count.

Each is swept over its knob; ``lower_envelope`` and ``shortfall_at`` turn a sweep into the
shortfall a baseline has at a given GPU cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HOUR_SECONDS = 3600.0
DAY_HOURS = 24
WEEK_HOURS = 7 * 24

HPA_TARGET = "hpa_target"
STATIC_FLOOR = "static_floor"
SCHEDULE = "hour_of_week"
PHPA = "phpa"
BASELINES = (HPA_TARGET, STATIC_FLOOR, SCHEDULE, PHPA)


@dataclass(frozen=True)
class SweepSettings:
    """The knob values each policy is run at. The defaults span from cheaper than reactive
    HPA to well past the oracle's cost on traces scaled to 20 peak replicas."""

    quantiles: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
    """Predictive's headroom knob: the upper quantile it forecasts."""
    hpa_targets: tuple[float, ...] = (0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)
    """Reactive HPA (and PHPA) at these per-pod targets."""
    floor_fractions: tuple[float, ...] = tuple(k / 20 for k in range(1, 41))
    """Static floors as fractions of the peak replicas (0.05 .. 2.0, i.e. 1 .. 40 at 20)."""
    schedule_margins: tuple[float, ...] = (0.5, 0.75, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
    """Margins on last week's hourly peak."""
    phpa_targets: tuple[float, ...] = (0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
    baselines: bool = True
    """False: sweep predictive's quantiles only, no baseline lanes (what the objective's
    chooser replays: it compares headroom settings, not alternatives)."""

    def __post_init__(self) -> None:
        required = ("quantiles", "hpa_targets", "floor_fractions", "schedule_margins")
        for name in required if self.baselines else ("quantiles",):
            if not getattr(self, name):
                raise ValueError(f"sweep {name} must not be empty")
        if not all(0 < q < 1 for q in self.quantiles):
            raise ValueError("sweep quantiles must lie in (0, 1)")
        if not all(t > 0 for t in (*self.hpa_targets, *self.phpa_targets)):
            raise ValueError("sweep targets must be > 0")


def replicas_for(demand: float, target: float) -> int:
    """``ceil(demand / target)``, robust to float noise, at least 0."""
    return max(math.ceil(max(demand, 0.0) / target - 1e-9), 0)


def compute_static_floors(peak_replicas: int, fractions: Sequence[float]) -> list[int]:
    """The distinct floors (at least 1) the fractions of ``peak_replicas`` give, ascending."""
    return sorted({max(1, round(peak_replicas * f)) for f in fractions})


def compute_schedule_floor(
    demand: FloatArray,
    step_seconds: float,
    target: float,
    margin: float,
    lead_steps: int,
) -> IntArray:
    """The hour-of-week floor at each step (0 where no source hour is known yet).

    The floor at step ``t`` serves the hour holding ``t + lead_steps`` (a cron schedule fires
    a warm-up early). Its source is the same hour a week earlier, else a day earlier, and
    only if that hour's last step is at or before ``t``: the floor never uses demand after
    ``t``. Hours are counted from the trace's start.
    """
    n = len(demand)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    hour_of = (np.arange(n) * step_seconds // HOUR_SECONDS).astype(np.int64)
    hours = int(hour_of[-1]) + 1
    starts = np.flatnonzero(np.r_[True, np.diff(hour_of) != 0])
    # An hour's peak over its known steps; an hour with none (a collection gap) is unknown.
    values_ = np.asarray(demand, dtype=np.float64)
    known_peak = np.maximum.reduceat(np.where(np.isfinite(values_), values_, -np.inf), starts)
    peak = np.full(hours, np.nan)
    peak[hour_of[starts]] = np.where(np.isfinite(known_peak), known_peak, np.nan)
    last_step = np.full(hours, np.iinfo(np.int64).max, dtype=np.int64)
    last_step[hour_of[starts]] = np.r_[starts[1:] - 1, n - 1]

    t = np.arange(n, dtype=np.int64)
    served = ((t + lead_steps) * step_seconds // HOUR_SECONDS).astype(np.int64)
    out = np.zeros(n, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    for back in (WEEK_HOURS, DAY_HOURS):
        source = served - back
        ok = ~known & (source >= 0) & (source < hours)
        safe = np.where(ok, source, 0)
        ok &= (last_step[safe] <= t) & np.isfinite(peak[safe])
        values = np.ceil(margin * np.nan_to_num(peak[safe]) / target - 1e-9)
        out = np.where(ok, np.maximum(values, 0).astype(np.int64), out)
        known |= ok
    return out


class HoltWintersAdditive:
    """Additive Holt-Winters, updated one observation at a time, as PHPA runs it.

    Until one whole season has been seen it has no forecast; it then starts from the first
    season's mean as the level, no trend, and the first season's deviations from that mean.
    """

    def __init__(self, period: int, alpha: float = 0.9, beta: float = 0.9, gamma: float = 0.9):
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.first: list[float] = []
        self.level = 0.0
        self.trend = 0.0
        self.season: list[float] = []
        self.count = 0

    def update(self, y: float) -> None:
        m = self.period
        if self.count < m:
            self.first.append(y)
            self.count += 1
            if self.count == m:
                self.level = sum(self.first) / m
                self.season = [v - self.level for v in self.first]
            return
        i = self.count % m
        previous = self.level
        self.level = self.alpha * (y - self.season[i]) + (1 - self.alpha) * (previous + self.trend)
        self.trend = self.beta * (self.level - previous) + (1 - self.beta) * self.trend
        self.season[i] = self.gamma * (y - self.level) + (1 - self.gamma) * self.season[i]
        self.count += 1

    def forecast_next(self) -> float | None:
        """The next observation's forecast, or None before one whole season."""
        if self.count < self.period:
            return None
        return self.level + self.trend + self.season[self.count % self.period]


def lower_envelope(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated ``(gpu_hours, shortfall)`` points, by rising cost and falling
    shortfall: for each cost, the least shortfall any swept setting reached at that cost or
    less."""
    out: list[tuple[float, float]] = []
    for gpu, short in sorted(points):
        if not out or short < out[-1][1]:
            if out and out[-1][0] == gpu:
                out[-1] = (gpu, short)
            else:
                out.append((gpu, short))
    return out


@dataclass(frozen=True)
class IsoCost:
    """A baseline's shortfall at the controller's GPU-hours, and the controller's ratio."""

    shortfall_minutes: float
    ratio: float | None
    """Controller's shortfall over the baseline's; None when the baseline's is 0."""
    within_sweep: bool
    """False when the cost fell outside the swept range and the nearest end was used."""


def shortfall_at(envelope: Sequence[tuple[float, float]], gpu_hours: float) -> tuple[float, bool]:
    """Linear interpolation on the envelope at ``gpu_hours``; outside it, the nearest end
    (and False)."""
    if not envelope:
        raise ValueError("empty envelope")
    xs = [p[0] for p in envelope]
    ys = [p[1] for p in envelope]
    if gpu_hours < xs[0]:
        return ys[0], False
    if gpu_hours > xs[-1]:
        return ys[-1], False
    return float(np.interp(gpu_hours, xs, ys)), True


def compute_iso_cost(
    points: Sequence[tuple[float, float]], gpu_hours: float, shortfall_minutes: float
) -> IsoCost:
    """The baseline swept as ``points`` against the controller at ``(gpu_hours,
    shortfall_minutes)``."""
    baseline, inside = shortfall_at(lower_envelope(points), gpu_hours)
    ratio = shortfall_minutes / baseline if baseline > 0 else None
    return IsoCost(baseline, ratio, inside)
