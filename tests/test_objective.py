"""Headroom from an objective (issue 13 item 4): the chooser is pure, deterministic and causal,
and picks what the objective asks for on the replayed candidates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictive_scaler.backtest import SimulationSettings, simulate_demand
from predictive_scaler.baselines import SweepSettings
from predictive_scaler.objective import (
    CandidateOutcome,
    HeadroomChoice,
    Objective,
    _pick,
    choose_headroom,
)


def outcome(q: float, gpu: float, short: float, unserved: float = 0.0) -> CandidateOutcome:
    return CandidateOutcome(q, gpu, short, unserved, short / 1000)


# 1,000 measured minutes; GPU-hours rise and shortfall falls with the quantile.
OUTCOMES = (
    outcome(0.6, 100, 40, 30),
    outcome(0.8, 110, 12, 6),
    outcome(0.9, 120, 5, 2),
    outcome(0.99, 160, 0, 0),
)


@pytest.mark.parametrize(
    ("objective", "quantile", "met"),
    [
        (Objective(max_shortfall_share=0.05), 0.6, True),  # 4 % short: the cheapest meets it
        (Objective(max_shortfall_share=0.01), 0.9, True),  # 0.5 %: p80's 1.2 % does not
        (Objective(max_shortfall_share=0.0001), 0.99, True),  # only 0 minutes meets it
        # price 1: 100*60+30 = 6030 < 6606 < 7202: the cheapest wins
        (Objective(shortfall_price=1), 0.6, None),
        # price 50: 6000+1500 = 7500 > 6600+300 = 6900 < 7200+100 = 7300
        (Objective(shortfall_price=50), 0.8, None),
        # price 1000: p90 7200+2000 = 9200 < p99's 9600 < p80's 6600+6000
        (Objective(shortfall_price=1000), 0.9, None),
        (Objective(shortfall_price=10_000), 0.99, None),  # 9600 < 7200 + 20000
    ],
)
def test_the_choice_is_what_the_objective_asks(
    objective: Objective, quantile: float, met: bool | None
) -> None:
    choice = _pick(objective, OUTCOMES, 1000.0)
    assert (choice.quantile, choice.met) == (quantile, met), choice.reason
    assert choice.chosen is not None and choice.chosen.quantile == quantile


def test_no_candidate_meets_the_share_the_fewest_short_is_chosen_and_says_so() -> None:
    short = (outcome(0.6, 100, 90), outcome(0.9, 120, 30), outcome(0.99, 160, 30))
    choice = _pick(Objective(max_shortfall_share=0.01), short, 1000.0)
    # p90 and p99 tie at 30 minutes: the cheaper one.
    assert (choice.quantile, choice.met) == (0.9, False)
    assert "none within 1%" in choice.reason


def test_ties_go_to_less_headroom() -> None:
    same = (outcome(0.8, 100, 0), outcome(0.7, 100, 0))
    assert _pick(Objective(max_shortfall_share=0.01), same, 1000.0).quantile == 0.7
    assert _pick(Objective(shortfall_price=5), same, 1000.0).quantile == 0.7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"max_shortfall_share": 0.01, "shortfall_price": 2.0}, "exactly one"),
        ({"max_shortfall_share": 0.0}, "maxShortfallShare must be in (0, 1), got 0.0"),
        ({"max_shortfall_share": 1.0}, "maxShortfallShare must be in (0, 1), got 1.0"),
        ({"shortfall_price": 0.0}, "shortfallPrice must be > 0, got 0.0"),
    ],
)
def test_a_bad_objective_says_which_rule(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Objective(**kwargs)


# A daily shape at 10-minute steps, 4 days: the chooser replays the last 2.
STEP = 600.0
_HOUR = (np.arange(4 * 144) % 144) / 6.0
DAILY = 1.0 + 9.0 * np.clip(_HOUR - 8, 0, 1) * np.clip(19 - _HOUR, 0, 1)
SCENARIO = SimulationSettings(
    target=0.7, min_replicas=1, max_replicas=40, warmup_seconds=1200, model="seasonal_naive"
)


def test_the_choice_replays_every_candidate_and_is_deterministic() -> None:
    noisy = DAILY * (1 + 0.2 * np.random.default_rng(3).standard_normal(DAILY.size))
    a = choose_headroom(noisy, STEP, SCENARIO, Objective(max_shortfall_share=0.02))
    b = choose_headroom(noisy, STEP, SCENARIO, Objective(max_shortfall_share=0.02))
    assert a == b
    assert [c.quantile for c in a.candidates] == [0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99]
    assert a.measured_minutes == 2 * 1440
    # More headroom never costs less on the same fit.
    gpu = [c.gpu_hours for c in a.candidates]
    assert gpu == sorted(gpu)
    assert a.quantile is not None and a.met is not None
    chosen = a.chosen
    assert chosen is not None
    if a.met:
        assert chosen.shortfall_share <= 0.02
        assert all(
            c.gpu_hours >= chosen.gpu_hours for c in a.candidates if c.shortfall_share <= 0.02
        )


def test_too_little_history_makes_no_choice() -> None:
    choice = choose_headroom(DAILY[:100], STEP, SCENARIO, Objective(shortfall_price=3))
    assert choice.quantile is None
    assert choice.reason == "history too short for the objective: 16.7h, needs 24.0h"


def test_missing_points_hold_the_value_before_them() -> None:
    gappy = DAILY.copy()
    gappy[[50, 300, 301]] = np.nan
    held = DAILY.copy()
    held[50], held[300], held[301] = held[49], held[299], held[299]
    objective = Objective(max_shortfall_share=0.01)
    assert choose_headroom(gappy, STEP, SCENARIO, objective) == choose_headroom(
        held, STEP, SCENARIO, objective
    )


# -- causality: the backtest's objective run ------------------------------------------

LOOP = SimulationSettings(
    target=0.5,
    min_replicas=1,
    max_replicas=20,
    warmup_seconds=120,
    cycle_seconds=60,
    stabilization_seconds=120,
    model="persistence",
    history_seconds=86_400,
    refit_interval_seconds=600,
)
N = 40


def loop_chooser(window: np.ndarray) -> float | None:
    return choose_headroom(
        window, 60.0, LOOP, Objective(max_shortfall_share=0.05), min_history_seconds=600
    ).quantile


@settings(max_examples=30, deadline=None)
@given(
    demand=st.lists(st.floats(0, 9), min_size=N, max_size=N),
    tail=st.lists(st.floats(0, 9), min_size=N, max_size=N),
    cut=st.integers(17, N - 2),
)
def test_the_objective_run_never_acts_on_demand_it_has_not_seen(
    demand: list[float], tail: list[float], cut: int
) -> None:
    # Changing demand after `cut` leaves the objective run's quantiles chosen up to `cut`
    # and its minReplicas up to `cut` unchanged: the chooser replays only what Prometheus
    # held at the refit.
    changed = demand[: cut + 1] + tail[cut + 1 :]
    seen: dict[str, list[list[float]]] = {"a": [], "b": []}

    def recording(run: str) -> Callable[[np.ndarray], float | None]:
        def choose(window: np.ndarray) -> float | None:
            seen[run].append(window.tolist())
            return loop_chooser(window)

        return choose

    a = simulate_demand(np.array(demand), 60.0, LOOP, headroom=recording("a"))
    b = simulate_demand(np.array(changed), 60.0, LOOP, headroom=recording("b"))
    # The chooser at the refit of step t is handed the t + 1 points up to t, no more.
    assert [len(w) for w in seen["a"]] == [t + 1 for t, _ in a.headroom]
    before = sum(1 for t, _ in a.headroom if t <= cut)
    assert seen["a"][:before] == seen["b"][:before]
    assert [c for c in a.headroom if c[0] <= cut] == [c for c in b.headroom if c[0] <= cut]
    ra, rb = a.runs["objective"], b.runs["objective"]
    np.testing.assert_array_equal(ra.min_replicas[: cut + 1], rb.min_replicas[: cut + 1])
    np.testing.assert_array_equal(ra.total[: cut + 2], rb.total[: cut + 2])


def test_the_objective_run_decides_on_the_quantile_it_chose() -> None:
    # A chooser that always answers 0.9 makes the objective run predictive at p90 exactly;
    # one that answers 0.6 makes it the p60 lane of a sweep.
    d = DAILY * (1 + 0.2 * np.random.default_rng(5).standard_normal(DAILY.size))
    base = replace(SCENARIO, quantile=0.9)
    at_90 = simulate_demand(d, STEP, base, headroom=lambda w: 0.9)
    assert at_90.runs["objective"].figures() == at_90.runs["predictive"].figures()
    at_60 = simulate_demand(d, STEP, base, headroom=lambda w: 0.6)
    assert {q for _, q in at_60.headroom} == {0.6}
    swept = simulate_demand(d, STEP, base, sweep=SweepSettings(quantiles=(0.6,), baselines=False))
    (p60,) = (p for p in swept.frontier["predictive"] if p.knob == 0.6)
    run = at_60.runs["objective"]
    assert (run.gpu_hours, run.underprovisioned_minutes) == (
        p60.gpu_hours,
        p60.underprovisioned_minutes,
    )
    assert run.gpu_hours < at_90.runs["objective"].gpu_hours


def test_a_choice_without_an_answer_keeps_the_settings_quantile() -> None:
    d = DAILY.copy()
    result = simulate_demand(d, STEP, SCENARIO, headroom=lambda w: None)
    assert {q for _, q in result.headroom} == {SCENARIO.quantile}
    assert result.runs["objective"].figures() == result.runs["predictive"].figures()


def test_headroom_choice_is_a_value() -> None:
    choice = HeadroomChoice(None, Objective(shortfall_price=1), None, 0.0)
    assert choice.chosen is None
