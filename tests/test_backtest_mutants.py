"""``predictive_scaler.backtest`` where mutmut found the suite blind (docs/testing.md lists the
survivors that remain and why): what a scenario refuses, how the HPA rounds and where its
tolerance ends, what the figures count from the window's start, how the policy's knobs reach
the simulator, and what a sweep and a headroom chooser report."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from predictive_scaler.backtest import (
    DEFAULT_POLICY,
    PolicyRun,
    SimulatedHpa,
    SimulationSettings,
    _measure,
    scale_demand,
    simulate_demand,
    simulation_settings,
)
from predictive_scaler.baselines import SweepSettings
from predictive_scaler.policy_settings import decision_policy

# Persistence at 1-minute steps, 2-step warm-up, one decision per step (as test_backtest's LOOP).
LOOP = SimulationSettings(
    target=0.5,
    min_replicas=1,
    max_replicas=20,
    warmup_seconds=120,
    cycle_seconds=60,
    stabilization_seconds=120,
    model="persistence",
    history_seconds=86_400,
    refit_interval_seconds=1800,
)
# Demand 1 pod's worth until step 24, then 6 (test_backtest's hand-followed run).
STEP_UP = np.array([1.0] * 24 + [6.0] * 16)


# -- what a scenario refuses ----------------------------------------------------------------


def test_a_scenario_refuses_a_target_of_zero_and_takes_any_positive_one() -> None:
    with pytest.raises(ValueError, match=r"^target must be > 0, got 0\.0$"):
        SimulationSettings(target=0.0)
    assert SimulationSettings(target=1e-6).target == 1e-6


@pytest.mark.parametrize(("lo", "hi"), [(0, 60), (6, 5)])
def test_a_scenario_refuses_min_replicas_outside_one_to_max(lo: int, hi: int) -> None:
    with pytest.raises(ValueError, match=rf"^need 1 <= min replicas \({lo}\) <= max \({hi}\)$"):
        SimulationSettings(min_replicas=lo, max_replicas=hi)


def test_a_scenario_takes_min_replicas_of_one_and_equal_to_max() -> None:
    assert SimulationSettings(min_replicas=1, max_replicas=1).max_replicas == 1
    assert SimulationSettings(min_replicas=5, max_replicas=5).min_replicas == 5


def test_a_scenario_refuses_no_peak_replicas_and_takes_one() -> None:
    with pytest.raises(ValueError, match=r"^peak replicas must be >= 1, got 0$"):
        SimulationSettings(peak_replicas=0)
    assert SimulationSettings(peak_replicas=1).peak_replicas == 1


def test_the_default_scenario_is_the_default_policy_on_the_documented_hpa() -> None:
    s = SimulationSettings()
    assert (s.target, s.peak_replicas, s.min_replicas, s.max_replicas) == (0.7, 20, 1, 60)
    assert (s.tolerance, s.stabilization_seconds) == (0.1, 300.0)
    assert s.warmup_seconds == DEFAULT_POLICY.warmup_seconds
    assert s.cycle_seconds == DEFAULT_POLICY.interval_seconds
    assert s.decision == decision_policy(DEFAULT_POLICY)


def test_a_policy_reaches_every_knob_of_the_scenario() -> None:
    policy = replace(
        DEFAULT_POLICY,
        warmup_seconds=240.0,
        interval_seconds=45.0,
        model="persistence",
        quantile=0.8,
        floor_quantile=0.3,
        seasons=("daily",),
        history_seconds=3 * 86_400.0,
        refit_interval_seconds=900.0,
        stale_after_seconds=120.0,
        scale_up_step=3,
        scale_down_step=2,
    )
    s = simulation_settings(policy, target=0.4, peak_replicas=8, min_replicas=2, max_replicas=9)
    assert s == SimulationSettings(
        target=0.4,
        peak_replicas=8,
        min_replicas=2,
        max_replicas=9,
        warmup_seconds=240.0,
        cycle_seconds=45.0,
        model="persistence",
        quantile=0.8,
        floor_quantile=0.3,
        seasons=("daily",),
        history_seconds=3 * 86_400.0,
        refit_interval_seconds=900.0,
        stale_after_seconds=120.0,
        decision=decision_policy(policy),
    )
    plain = simulation_settings(DEFAULT_POLICY)
    assert (plain.target, plain.peak_replicas, plain.min_replicas, plain.max_replicas) == (
        0.7,
        20,
        1,
        60,
    )


# -- scaling the trace ----------------------------------------------------------------------


def test_missing_points_stay_missing_and_the_p99_is_of_the_observed_ones() -> None:
    values = np.array([np.nan, *range(1, 101)], dtype=np.float64)
    d = scale_demand(values, 0.5, 10)
    assert np.isnan(d[0])
    assert d.dtype == np.float64
    assert d[-1] == pytest.approx(100 / np.percentile(np.arange(1.0, 101.0), 99) * 10 * 0.5)


def test_a_trace_whose_p99_is_below_zero_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^the trace's 99th percentile is 0: nothing to scale$"):
        scale_demand(np.full(10, -1.0), 0.7, 20)


# -- the reactive HPA -----------------------------------------------------------------------


def hpa(pods: list[int], **kw: float) -> SimulatedHpa:
    h = SimulatedHpa(replace(LOOP, **kw), 60.0)  # type: ignore[arg-type]
    h.pods = list(pods)
    return h


def test_no_observed_demand_asks_for_the_given_min_replicas() -> None:
    assert hpa([0, 0, 0]).desired(1, 0.0, 2) == 2


def test_the_tolerance_is_inclusive_at_its_edge() -> None:
    # 2 ready pods at target 0.5 reading 1.25: ratio 1.25, exactly 0.25 off: the count stays.
    assert hpa([0, 0, 0], tolerance=0.25).desired(1, 1.25, 1) == 3
    # Just past the edge the HPA computes ceil(1.26 / 0.5) = 3 from the ready pods.
    assert hpa([0, 0, 5], tolerance=0.25).desired(1, 1.26, 1) == 3
    assert hpa([0, 0, 5, 5], tolerance=0.25).desired(1, 1.26, 1) == 3


def test_one_ready_pod_within_tolerance_keeps_the_warming_ones() -> None:
    # 1 ready, 2 warming: the ready pod reads exactly the target, so the HPA keeps all 3.
    assert hpa([0, 5, 5]).desired(1, 0.5, 1) == 3


def test_a_count_that_is_whole_up_to_float_noise_is_not_rounded_up() -> None:
    # 2.1 / 0.7 is 3.0000000000000004 in floating point: 3 pods, not 4.
    assert hpa([0, 0, 0, 0], target=0.7).desired(1, 2.1, 1) == 3


def test_the_hpa_never_goes_above_max_replicas() -> None:
    # 3 ready pods saturated at 3: the HPA asks for ceil(3 / 0.5) = 6, capped at 4.
    h = hpa([0, 0, 0], max_replicas=4)
    h.act(1, 100.0, 1)
    assert len(h.pods) == 4


# -- the figures ----------------------------------------------------------------------------


def test_a_run_reports_its_four_figures_by_name() -> None:
    run = PolicyRun(
        np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), 1.5, 0.25, 3.0, 7
    )
    assert run.figures() == {
        "underprovisioned_minutes": 1.5,
        "unserved_fraction": 0.25,
        "gpu_hours": 3.0,
        "scale_events": 7,
    }


def test_the_figures_count_from_the_window_start_and_its_first_change() -> None:
    demand = np.array([5.0, 2.0, 3.0, 3.0])
    ready = np.array([1, 1, 3, 3])
    total = np.array([1, 3, 3, 2])
    run = _measure(demand, ready, total, np.ones(4, dtype=np.int64), 1, 120.0)
    # From step 1: short at step 1 (2 on 1 ready), one 2-minute step; step 0's shortfall
    # (5 on 1) is before the window.
    assert run.underprovisioned_minutes == 2.0
    assert run.unserved_fraction == pytest.approx(1.0 / 8.0)
    assert run.gpu_hours == pytest.approx((3 + 3 + 2) * 120 / 3600)
    # 1 -> 3 entering the window counts (step 0 to step 1), then 3 -> 2.
    assert run.scale_events == 2
    assert _measure(demand, ready, total, np.ones(4, dtype=np.int64), 2, 60.0).scale_events == 1


def test_a_window_without_demand_has_nothing_unserved() -> None:
    zero = np.zeros(3)
    run = _measure(zero, np.zeros(3, np.int64), np.ones(3, np.int64), np.ones(3, np.int64), 0, 60.0)
    assert run.unserved_fraction == 0.0
    assert run.underprovisioned_minutes == 0.0


# -- the loop -------------------------------------------------------------------------------


def test_one_simulated_cycle_standing_for_two_live_ones_raises_twice_as_far() -> None:
    # A 30 s interval on a 1-minute trace: each simulated step is two live cycles, each
    # raising by at most 4, so from 2 the controller needing 12 goes 10, then 12.
    run = simulate_demand(STEP_UP, 60.0, replace(LOOP, cycle_seconds=30)).runs["predictive"]
    assert list(run.min_replicas[24:27]) == [10, 12, 12]


def test_progress_is_reported_after_every_step() -> None:
    seen: list[tuple[int, int]] = []
    simulate_demand(STEP_UP, 60.0, LOOP, progress=lambda done, n: seen.append((done, n)))
    assert seen == [(t, 40) for t in range(1, 41)]


def test_a_sweep_lists_each_knob_once_with_its_unserved_pod_minutes() -> None:
    sweep = SweepSettings(
        quantiles=(0.9, 0.5),
        hpa_targets=(0.5, 0.25),
        floor_fractions=(0.05, 0.5),
        schedule_margins=(1.0,),
        phpa_targets=(0.5,),
    )
    result = simulate_demand(STEP_UP, 60.0, replace(LOOP, peak_replicas=8), sweep=sweep)
    knobs = {name: [p.knob for p in points] for name, points in result.frontier.items()}
    # The default knob first, then the swept ones it does not already cover.
    assert knobs == {
        "predictive": [0.9, 0.5],
        "hpa_target": [0.5, 0.25],
        "oracle": [0.0],
        "static_floor": [1, 4],
        "hour_of_week": [1.0],
        "phpa": [0.5],
    }
    start = result.eval_start
    for name in ("predictive", "hpa_target", "oracle"):
        point = result.frontier[name][0]
        run = result.runs["reactive" if name == "hpa_target" else name]
        gap = np.maximum(STEP_UP[start:] - run.ready[start:], 0.0).sum()
        assert point.unserved_pod_minutes == pytest.approx(gap * 60.0 / 60.0)
        assert point.gpu_hours == run.gpu_hours
        assert point.underprovisioned_minutes == run.underprovisioned_minutes
    # A static floor of 4 holds minReplicas at 4 on every step.
    floors = result.frontier["static_floor"]
    assert floors[1].gpu_hours >= 4 * (40 - start) / 60


def test_a_sweep_without_baselines_runs_only_predictive_and_the_oracle() -> None:
    sweep = SweepSettings(quantiles=(0.9, 0.5), baselines=False)
    result = simulate_demand(STEP_UP, 60.0, LOOP, sweep=sweep)
    assert {name: len(points) for name, points in result.frontier.items()} == {
        "hpa_target": 1,
        "predictive": 2,
        "oracle": 1,
    }


def test_a_headroom_chooser_sees_each_refit_window_and_sets_the_objective_run() -> None:
    windows: list[int] = []

    def choose(window: np.ndarray) -> float | None:
        windows.append(len(window))
        return 0.5

    # A refit once 10 points have been absorbed since the last fit, from the control start
    # (step 17): the fit at 17 takes points up to 17, 18 .. 27 are absorbed, the next fit
    # is at 28 (on 29 points), then 39.
    s = replace(LOOP, refit_interval_seconds=600)
    result = simulate_demand(STEP_UP, 60.0, s, headroom=choose)
    assert result.headroom == ((17, 0.5), (28, 0.5), (39, 0.5))
    assert windows == [18, 29, 40]
    assert "objective" in result.runs
    assert "objective" not in result.frontier


def test_a_chooser_with_no_choice_keeps_the_settings_quantile() -> None:
    result = simulate_demand(STEP_UP, 60.0, LOOP, headroom=lambda window: None)
    assert result.headroom == ((17, 0.9),)
    objective, predictive = result.runs["objective"], result.runs["predictive"]
    np.testing.assert_array_equal(objective.min_replicas, predictive.min_replicas)
