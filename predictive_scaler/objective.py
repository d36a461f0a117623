"""Headroom from an objective: the upper quantile that meets what the user asked for, on the
target's own recent history, replayed through the backtest's simulator.

Pure: numbers in, a choice out; no I/O, no clock, no logging. Deterministic (the simulator
and the models are). Causal by construction: it sees only the history it is given, which
the callers take from before the refit it serves (the live loop's fit window, the backtest's
``seen[: t + 1]``).

The replay is :func:`predictive_scaler.backtest.simulate_demand` on that history, with the
target's own settings, sweeping only predictive's quantile (no baseline lanes): its first
half (at most 7 days) trains, the rest is measured, refitting on the target's schedule.
Two kinds of objective:

- ``maxShortfallShare``: at most this share of the measured minutes under-provisioned
  (demand above the ready pods). The cheapest candidate (fewest GPU-hours) that meets it;
  none does: the one short the fewest minutes (``met`` False).
- ``shortfallPrice``: an under-provisioned pod-minute (a pod's worth of demand above the
  ready pods for a minute) costs this many GPU-minutes. The candidate of least
  ``GPU-minutes + price x unserved pod-minutes``.

Ties go to the lower quantile (less headroom).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models import FitResult
from predictive_scaler.backtest import (
    SimulationSettings,
    evaluation_start,
    simulate_demand,
    simulation_settings,
)
from predictive_scaler.baselines import SweepSettings
from predictive_scaler.config.policy import Objective, Policy
from predictive_scaler.forecasting import fit_compact
from predictive_scaler.values import HeadroomReport

__all__ = [
    "CANDIDATE_QUANTILES",
    "MIN_HISTORY_SECONDS",
    "CandidateOutcome",
    "HeadroomChoice",
    "Objective",
    "ObjectiveFit",
    "choose_headroom",
    "fit_with_objective",
    "objective_scenario",
]

FloatArray = npt.NDArray[np.float64]

CANDIDATE_QUANTILES: Final = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
"""The quantiles the chooser replays (the policy's ``quantile`` range is (0.5, 1))."""
MIN_HISTORY_SECONDS: Final = 86_400.0
"""History the chooser needs: half of it trains, half is measured."""


@dataclass(frozen=True)
class CandidateOutcome:
    """One quantile replayed over the measured part of the history."""

    quantile: float
    gpu_hours: float
    underprovisioned_minutes: float
    unserved_pod_minutes: float
    shortfall_share: float
    """Under-provisioned minutes over the measured minutes."""


@dataclass(frozen=True)
class HeadroomChoice:
    """The chooser's answer, and the figures it rests on."""

    quantile: float | None
    """The quantile to decide on; None: no choice (too little history), keep the policy's."""
    objective: Objective
    met: bool | None
    """Whether the chosen quantile met a ``maxShortfallShare`` on the replay (None for a
    price, or without a choice)."""
    measured_minutes: float
    candidates: tuple[CandidateOutcome, ...] = ()
    reason: str = ""

    @property
    def chosen(self) -> CandidateOutcome | None:
        return next((c for c in self.candidates if c.quantile == self.quantile), None)

    def report(self) -> HeadroomReport:
        """What ``recommend`` and the annotation show."""
        return HeadroomReport(
            self.objective.describe(),
            self.objective.as_dict(),
            self.quantile,
            self.met,
            self.reason,
        )


def objective_scenario(
    policy: Policy, target_per_pod: float, min_replicas: int, max_replicas: int
) -> SimulationSettings:
    """The replay of a live target: its policy on its HPA (target per pod, base and max
    replicas as read this cycle), as ``backtest --config --target`` replays it."""
    high = max(max_replicas, 1)
    return simulation_settings(
        policy,
        target=target_per_pod,
        min_replicas=min(max(min_replicas, 1), high),
        max_replicas=high,
    )


@dataclass
class ObjectiveFit(FitResult):
    """A fit made at the quantile the chooser picked, and the choice."""

    quantile: float = 0.9
    choice: HeadroomChoice | None = None


def fit_with_objective(
    history: FloatArray,
    step_seconds: float,
    scenario: SimulationSettings,
    objective: Objective,
    fit_args: tuple[Any, ...],
) -> ObjectiveFit:
    """Choose the quantile on ``history``, then run the forecaster's own fit
    (``forecasting.fit_compact(*fit_args)``, its quantile replaced by the choice; the
    scenario's quantile without one). Module-level and of plain arguments, so a process pool
    can run it as it runs a plain fit."""
    choice = choose_headroom(history, step_seconds, scenario, objective)
    quantile = choice.quantile if choice.quantile is not None else scenario.quantile
    name, window, step, horizon, seasons, _policy_quantile, kept = fit_args
    result = fit_compact(name, window, step, horizon, seasons, quantile, kept)
    return ObjectiveFit(result.requested, result.model, result.notes, quantile, choice)


def choose_headroom(
    history: FloatArray,
    step_seconds: float,
    settings: SimulationSettings,
    objective: Objective,
    *,
    candidates: Sequence[float] = CANDIDATE_QUANTILES,
    min_history_seconds: float = MIN_HISTORY_SECONDS,
) -> HeadroomChoice:
    """The quantile among ``candidates`` that best meets ``objective`` when ``history``
    (demand in pods' worth per step, NaN where missing) is replayed with ``settings``."""
    demand = _held(np.asarray(history, dtype=np.float64))
    span = len(demand) * step_seconds
    if span < min_history_seconds:
        return HeadroomChoice(
            None,
            objective,
            None,
            0.0,
            reason=f"history too short for the objective: {span / 3600:.1f}h, needs "
            f"{min_history_seconds / 3600:.1f}h",
        )
    quantiles = tuple(sorted(set(candidates)))
    result = simulate_demand(
        demand,
        step_seconds,
        replace(settings, quantile=_nearest(settings.quantile, quantiles)),
        sweep=SweepSettings(quantiles=quantiles, baselines=False),
    )
    measured = (len(demand) - evaluation_start(len(demand), step_seconds)) * step_seconds / 60
    outcomes = tuple(
        CandidateOutcome(
            p.knob,
            p.gpu_hours,
            p.underprovisioned_minutes,
            p.unserved_pod_minutes,
            p.underprovisioned_minutes / measured if measured > 0 else 0.0,
        )
        for p in sorted(result.frontier["predictive"], key=lambda p: p.knob)
    )
    return _pick(objective, outcomes, measured)


def _pick(
    objective: Objective, outcomes: tuple[CandidateOutcome, ...], measured: float
) -> HeadroomChoice:
    days = f"{measured / 1440:.1f} days replayed"
    share = objective.max_shortfall_share
    if share is not None:
        meeting = [c for c in outcomes if c.shortfall_share <= share]
        if meeting:
            best = min(meeting, key=lambda c: (c.gpu_hours, c.quantile))
            return HeadroomChoice(
                best.quantile,
                objective,
                True,
                measured,
                outcomes,
                f"p{_pct(best.quantile)}: {100 * best.shortfall_share:.2f}% of minutes short, "
                f"the cheapest within {100 * share:g}% ({days})",
            )
        best = min(outcomes, key=lambda c: (c.underprovisioned_minutes, c.gpu_hours, c.quantile))
        return HeadroomChoice(
            best.quantile,
            objective,
            False,
            measured,
            outcomes,
            f"p{_pct(best.quantile)}: {100 * best.shortfall_share:.2f}% of minutes short, the "
            f"fewest of any candidate; none within {100 * share:g}% ({days})",
        )
    price = objective.shortfall_price
    assert price is not None

    def cost(c: CandidateOutcome) -> float:
        return c.gpu_hours * 60 + price * c.unserved_pod_minutes

    best = min(outcomes, key=lambda c: (cost(c), c.quantile))
    return HeadroomChoice(
        best.quantile,
        objective,
        None,
        measured,
        outcomes,
        f"p{_pct(best.quantile)}: the least cost, {cost(best):,.0f} GPU-minutes with "
        f"{best.unserved_pod_minutes:,.1f} unserved pod-minutes at {price:g} each ({days})",
    )


def _held(values: FloatArray) -> FloatArray:
    """From the first finite point; a missing point holds the one before it (a scrape gap
    is not a drop in demand)."""
    finite = np.flatnonzero(np.isfinite(values))
    if not finite.size:
        return np.zeros(0)
    window = values[finite[0] :]
    index = np.where(np.isfinite(window), np.arange(window.size), 0)
    np.maximum.accumulate(index, out=index)
    held: FloatArray = window[index]
    return held


def _nearest(quantile: float, candidates: tuple[float, ...]) -> float:
    # The replay's fit is scored at one quantile (auto's choice); the candidate nearest the
    # policy's keeps it what the live fit would be at that quantile.
    return min(candidates, key=lambda q: (abs(q - quantile), q))


def _pct(quantile: float) -> str:
    return f"{100 * quantile:g}"
