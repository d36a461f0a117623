"""Deciding minReplicas: a pure function of forecast, HPA state, policy, history and now.

No I/O, no clock, no logging: the caller passes ``now`` and the previous history and gets
back the decision, its reasons and the new history. The steps follow the HPA controller's
normalisation (clamp, rate limits, stabilisation), and the reasons use its vocabulary so
that ``kubectl describe hpa`` reads the same way for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

# Reasons, in the HPA controller's words where it has one.
DESIRED_WITHIN_RANGE = "DesiredWithinRange"
TOO_FEW_REPLICAS = "TooFewReplicas"
TOO_MANY_REPLICAS = "TooManyReplicas"
SCALE_UP_LIMIT = "ScaleUpLimit"
SCALE_DOWN_LIMIT = "ScaleDownLimit"
SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
FAILED_GET_METRIC = "FailedGetMetric"
PARTIAL_METRICS = "PartialMetrics"
MISSING_DATA_DECAY = "MissingDataDecay"
AMBIGUOUS_SELECTOR = "AmbiguousSelector"


@dataclass(frozen=True)
class DecisionPolicy:
    """The knobs of the decision. No defaults of its own: a target's policy sets them
    (``policy_settings.decision_policy``), and the policy's defaults live in its field table."""

    scale_up_step: int
    """Most that minReplicas may rise in one cycle. The HPA jumps straight to a raised
    minReplicas, skipping its own behaviours, so this is the only brake on a wrong
    forecast."""
    scale_down_delay_seconds: float
    """How long the forecast must have asked for less before minReplicas is lowered."""
    scale_down_step: int
    """Most that minReplicas may fall in one cycle."""
    missing_data_hold_seconds: float
    """On missing or bad data, hold minReplicas this long, then decay to the base."""

    def __post_init__(self) -> None:
        if self.scale_up_step < 1 or self.scale_down_step < 1:
            raise ValueError("scale steps must be >= 1")
        if self.scale_down_delay_seconds < 0 or self.missing_data_hold_seconds < 0:
            raise ValueError("delays must be >= 0")


@dataclass(frozen=True)
class HpaLimits:
    """What the decision needs of the HPA."""

    min_replicas: int
    """The HPA's minReplicas now (ours, or the user's when we have not raised it)."""
    max_replicas: int
    base_min_replicas: int
    """The user's own minReplicas, which the controller never goes below."""
    current_replicas: int | None = None
    """Pods the HPA runs now (``status.currentReplicas``); None when unknown."""


@dataclass(frozen=True)
class SignalForecast:
    """One signal's forecast for the coming warm-up window, or why there is none."""

    name: str
    upper: float | None
    """Maximum of the upper quantile over the window, in the signal's units."""
    target_per_pod: float
    problem: str | None = None
    """Why ``upper`` is missing (no data, stale, fit failed)."""
    partial: str | None = None
    """Why ``upper`` stands on partial data (a lower bound: fewer pods reporting than run,
    demand not corrected for saturation, a query that failed this cycle): it may raise,
    never lower."""
    floor: float | None = None
    """The history floor (:func:`compute_history_floor`), in the signal's units: capacity
    never goes below the level its recent history usually held, so demand that returns
    after a lull (or jumps faster than a forecast follows) finds pods ready. None: off."""


@dataclass(frozen=True)
class DecisionHistory:
    """What the decision remembers between cycles. Returned anew, never mutated."""

    recommendations: tuple[tuple[datetime, int], ...] = ()
    """Recent desired minReplicas with their times, for scale-down stabilisation."""
    tracking_since: datetime | None = None
    """Start of the current unbroken run of good data."""
    bad_since: datetime | None = None
    """Start of the current run of missing or bad data."""
    partial: bool = False
    """The newest cycle stood on partial data: ``tracking_since`` is then that cycle's own
    time, and moves on with every partial cycle (stored as "not started yet")."""


@dataclass(frozen=True)
class Step:
    """One normalisation step: its reason, the value after it and a message."""

    reason: str
    value: int
    message: str


@dataclass(frozen=True)
class Decision:
    """The new minReplicas, why, and the history to pass to the next cycle."""

    min_replicas: int
    needed: int | None
    steps: tuple[Step, ...]
    history: DecisionHistory = field(repr=False)

    @property
    def reason(self) -> str:
        return self.steps[-1].reason

    @property
    def message(self) -> str:
        return "; ".join(step.message for step in self.steps)


def compute_replicas_for(upper: float, target_per_pod: float) -> int:
    """The HPA's own formula, ``ceil(demand / target)``, robust to float noise."""
    if target_per_pod <= 0:
        raise ValueError(f"target per pod must be > 0, got {target_per_pod}")
    ratio = max(upper, 0.0) / target_per_pod
    return max(math.ceil(ratio - 1e-9), 0)


def compute_history_floor(history: npt.ArrayLike, quantile: float) -> float | None:
    """The ``quantile`` of the observed (finite) points of ``history``, the window the model
    was fitted on: the level demand held at least ``1 - quantile`` of the time. None when
    ``quantile`` is 0 (off) or nothing was observed. It only reads ``history``, so a floor
    learned at t uses no demand after t."""
    if quantile <= 0:
        return None
    values = np.asarray(history, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    return float(np.quantile(values, quantile))


def _capacity_demand(signal: SignalForecast) -> float:
    """What a good signal asks capacity for: its forecast, or its history floor when higher."""
    assert signal.upper is not None
    if signal.floor is not None and math.isfinite(signal.floor):
        return max(signal.upper, signal.floor)
    return signal.upper


def decide_min_replicas(
    signals: Sequence[SignalForecast],
    hpa: HpaLimits,
    policy: DecisionPolicy,
    history: DecisionHistory,
    now: datetime,
) -> Decision:
    """The minReplicas to set now, with the reason for every step."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not signals:
        raise ValueError("a decision needs at least one signal")
    base = min(hpa.base_min_replicas, hpa.max_replicas)
    current = min(max(hpa.min_replicas, base), hpa.max_replicas)
    good = [s for s in signals if s.upper is not None and math.isfinite(s.upper)]
    if not good:
        return _decide_without_data(signals, current, base, policy, history=history, now=now)

    needs = {s.name: compute_replicas_for(_capacity_demand(s), s.target_per_pod) for s in good}
    needed = max(needs.values())
    leader = max(needs, key=lambda name: needs[name])
    lead = next(s for s in good if s.name == leader)
    floored = lead.floor is not None and _capacity_demand(lead) > (lead.upper or 0.0)
    because = f" (its history floor {lead.floor:.3g} over the forecast)" if floored else ""
    steps = [Step(DESIRED_WITHIN_RANGE, needed, f"{leader} needs {needed} replicas{because}")]

    desired = needed
    if desired < base:
        desired = base
        steps.append(Step(TOO_FEW_REPLICAS, desired, f"raised to the base minReplicas {base}"))
    elif desired > hpa.max_replicas:
        desired = hpa.max_replicas
        steps.append(Step(TOO_MANY_REPLICAS, desired, f"capped at maxReplicas {desired}"))

    incomplete = [s for s in signals if s not in good or s.partial is not None]
    partial = bool(incomplete)
    tracking_since = history.tracking_since if history.tracking_since and not partial else now
    window = timedelta(seconds=policy.scale_down_delay_seconds)
    recent = tuple((t, v) for t, v in history.recommendations if now - t < window)
    recent = (*recent, (now, desired))
    new_history = DecisionHistory(
        recommendations=recent, tracking_since=tracking_since, partial=partial
    )

    if desired > current:
        # The brake limits pods added per cycle, so it counts from what runs: raising min
        # below the live count adds nothing and would spend the lead time it exists to buy.
        running = min(max(hpa.current_replicas or 0, 0), hpa.max_replicas)
        start = max(current, running)
        new = min(desired, start + policy.scale_up_step)
        if new < desired:
            steps.append(
                Step(
                    SCALE_UP_LIMIT,
                    new,
                    f"raise limited to +{policy.scale_up_step} over {start} replicas",
                )
            )
        return Decision(new, needed, tuple(steps), new_history)
    if desired == current:
        return Decision(current, needed, tuple(steps), new_history)

    # Lowering: only on complete data, after the forecast stayed lower for the delay.
    if partial:
        missing = ", ".join(f"{s.name} ({s.problem or s.partial})" for s in incomplete)
        steps.append(Step(PARTIAL_METRICS, current, f"not lowering without {missing}"))
        return Decision(current, needed, tuple(steps), new_history)
    stabilized = max(v for _, v in recent)
    if now - tracking_since < window or stabilized >= current:
        steps.append(
            Step(
                SCALE_DOWN_STABILIZED,
                current,
                f"holding {current} until the forecast stays lower for "
                f"{policy.scale_down_delay_seconds:.0f}s",
            )
        )
        return Decision(current, needed, tuple(steps), new_history)
    new = max(stabilized, current - policy.scale_down_step)
    if new > stabilized:
        steps.append(Step(SCALE_DOWN_LIMIT, new, f"lowering limited to -{policy.scale_down_step}"))
    elif stabilized > desired:
        steps.append(Step(SCALE_DOWN_STABILIZED, new, f"highest recent need is {stabilized}"))
    return Decision(new, needed, tuple(steps), new_history)


def _decide_without_data(
    signals: Sequence[SignalForecast],
    current: int,
    base: int,
    policy: DecisionPolicy,
    *,
    history: DecisionHistory,
    now: datetime,
) -> Decision:
    """Hold on bad data, then hand back to the HPA step by step; never raise on it."""
    problems = ", ".join(f"{s.name}: {s.problem or 'no forecast'}" for s in signals)
    bad_since = history.bad_since or now
    new_history = replace(DecisionHistory(), bad_since=bad_since)
    held = (now - bad_since).total_seconds()
    if held < policy.missing_data_hold_seconds or current <= base:
        step = Step(FAILED_GET_METRIC, current, f"holding {current}: {problems}")
        return Decision(current, None, (step,), new_history)
    new = max(base, current - policy.scale_down_step)
    step = Step(
        MISSING_DATA_DECAY,
        new,
        f"no usable data for {held:.0f}s ({problems}); returning towards base {base}",
    )
    return Decision(new, None, (step,), new_history)


def decide_ambiguous_selector(hpa: HpaLimits, overlap: str) -> Decision:
    """Hold while the target's pods are also another target's (``overlap`` says whose): its
    demand is not its own, so it may neither raise nor lower on it (the HPA controller stops
    scaling such HPAs alike). The history starts afresh: once the overlap ends, a lowering
    waits the whole delay on the target's own demand, and a raise is at once."""
    base = min(hpa.base_min_replicas, hpa.max_replicas)
    current = min(max(hpa.min_replicas, base), hpa.max_replicas)
    step = Step(AMBIGUOUS_SELECTOR, current, f"holding {current}: {overlap}")
    return Decision(current, None, (step,), DecisionHistory())
