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
    _make_lanes,
    _measure,
    _staleness,
    evaluation_start,
    scale_demand,
    simulate,
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


# -- the second mutation run's survivors (docs/testing.md, "backtest.py") --------------------

GAP = float("nan")


def test_a_float32_trace_is_scaled_in_float64() -> None:
    d = scale_demand(np.array([1.0, 2.0, 3.0], dtype=np.float32), 0.5, 4)
    assert d.dtype == np.float64


def test_a_trace_with_no_observed_point_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^the trace's 99th percentile is 0: nothing to scale$"):
        scale_demand(np.full(5, np.nan), 0.7, 20)


def test_a_trace_whose_p99_is_below_one_is_scaled() -> None:
    # p99 0.5: each point is 0.5 / 0.5 * 4 * 0.5 = 2 pods' worth.
    np.testing.assert_array_equal(scale_demand(np.full(10, 0.5), 0.5, 4), np.full(10, 2.0))


def test_the_window_starts_at_exactly_seven_days_of_one_second_steps() -> None:
    assert evaluation_start(10**7, 1.0) == 7 * 86_400


def test_the_tolerance_edge_keeps_the_warming_pods_too() -> None:
    # 2 ready of 4 at target 0.5 reading 1.25: exactly 0.25 off, so the HPA keeps 4; just
    # outside it would compute ceil(1.25 / 0.5) = 3 from the ready pods.
    assert hpa([0, 0, 5, 5], tolerance=0.25).desired(1, 1.25, 1) == 4


@pytest.mark.parametrize(
    ("t", "newest", "stale_after", "expected"),
    [
        (3, -1, 300.0, "no data: no sample in the history"),
        (2, 0, 300.0, None),  # a sample at step 0 is a sample
        (5, 3, 120.0, None),  # exactly staleAfter old is still fresh
        (5, 2, 120.0, "stale: newest sample is 180s old"),
        (4, 4, 0.0, None),  # the step's own sample
    ],
)
def test_staleness_by_the_newest_samples_age(
    t: int, newest: int, stale_after: float, expected: str | None
) -> None:
    assert _staleness(t, newest, 60.0, stale_after) == expected


def test_a_short_trace_is_decided_from_its_second_step_on_its_first_sample() -> None:
    # 8 steps: the window starts at 4 and control at max(1, 4 - 2 - 1) = 1. At step 1 the
    # newest sample (step 0: 1 ready pod reading 1 with a queue of 5, so 6) is one step old,
    # fresh: persistence on [6, missing] needs 12; from the HPA's 2 pods +4 a cycle: 6, 10, 12.
    run = simulate_demand(np.array([6.0, GAP, 6, 6, 6, 6, 6, 6]), 60.0, LOOP).runs["predictive"]
    assert list(run.min_replicas) == [1, 6, 10, 12, 12, 12, 12, 12]


def test_stale_data_holds_minreplicas_instead_of_raising_on_an_old_sample() -> None:
    # Demand jumps to 6 at step 24, then 6 missing steps. With staleAfter 60 s the controller
    # raises at 24 (6) and 25 (the sample 60 s old: fresh, 10), holds 10 from 26 (120 s old)
    # to 30, and raises to 12 when samples return at 31.
    d = np.array([1.0] * 24 + [6.0] + [GAP] * 6 + [6.0] * 9)
    run = simulate_demand(d, 60.0, replace(LOOP, stale_after_seconds=60)).runs["predictive"]
    assert list(run.min_replicas[23:33]) == [2, 6, 10, 10, 10, 10, 10, 10, 12, 12]


def test_one_simulated_cycle_standing_for_two_live_ones_lowers_twice_as_far() -> None:
    # 12 pods' worth needed until step 40, then 2: once the forecast stayed lower for the
    # 10-minute delay (step 49), each simulated step lowers by 2 (two live cycles of -1).
    d = np.array([6.0] * 40 + [1.0] * 40)
    one = simulate_demand(d, 60.0, LOOP).runs["predictive"]
    two = simulate_demand(d, 60.0, replace(LOOP, cycle_seconds=30)).runs["predictive"]
    assert list(one.min_replicas[48:53]) == [12, 11, 10, 9, 8]
    assert list(two.min_replicas[48:55]) == [12, 10, 8, 6, 4, 2, 2]


def test_decisions_fall_every_cycle_from_the_control_start() -> None:
    # 42 steps, a 3-step cycle: window from 21, control from 21 - 2 - 3 = 16, decisions at 16,
    # 19, 22, 25, 28. The jump to 6 at step 24 is first decided at 25: needs 12, +4 over the
    # 4 pods the HPA has by then: 8; at 28 over its 12: 12. minReplicas moves only then.
    d = np.array([1.0] * 24 + [6.0] * 18)
    run = simulate_demand(d, 60.0, replace(LOOP, cycle_seconds=180)).runs["predictive"]
    assert list(run.min_replicas[15:33]) == [1] + [2] * 9 + [8] * 3 + [12] * 5
    assert list(run.total[24:29]) == [2, 4, 8, 8, 12]


def test_a_trace_that_starts_with_a_gap_holds_the_base_and_notes_why() -> None:
    # Samples only from step 20: no fit until half the window is observed (step 39); until
    # then the controller holds its base and the result says why, once per distinct reason.
    d = np.array([GAP] * 20 + [6.0] * 20)
    result = simulate_demand(d, 60.0, LOOP)
    assert list(result.runs["predictive"].min_replicas[:39]) == [1] * 39
    assert result.notes[0] == "persistence: history has no observed value; falling back to nothing"
    assert result.notes[-1] == "persistence: 51% of the history is missing; falling back to nothing"
    np.testing.assert_array_equal(result.demand, d)
    assert result.step_seconds == 60.0


def test_an_integer_trace_is_simulated_as_float_demand() -> None:
    result = simulate_demand(np.array([1] * 24 + [6] * 16), 60.0, LOOP)
    assert result.demand.dtype == np.float64
    for run in result.runs.values():
        assert (run.ready.dtype, run.total.dtype, run.min_replicas.dtype) == (np.int64,) * 3


def test_simulate_passes_progress_and_the_headroom_chooser_on() -> None:
    seen: list[int] = []
    result = simulate(
        STEP_UP, 60.0, LOOP, progress=lambda done, n: seen.append(done), headroom=lambda w: 0.5
    )
    assert seen == list(range(1, 41))
    assert result.headroom == ((17, 0.5),)


def test_the_fit_window_is_the_policys_history_and_the_chooser_gets_floats() -> None:
    windows: list[tuple[int, object]] = []

    def choose(window: np.ndarray) -> float | None:
        windows.append((len(window), window.dtype))
        return 0.5

    # 10 minutes of history: every refit (17, 28, 39) fits on, and chooses from, 10 points.
    s = replace(LOOP, refit_interval_seconds=600, history_seconds=600)
    simulate_demand(STEP_UP, 60.0, s, headroom=choose)
    assert windows == [(10, np.float64)] * 3


def test_a_sweep_with_a_headroom_chooser_keeps_every_baseline() -> None:
    sweep = SweepSettings(quantiles=(0.9,), hpa_targets=(0.5,), phpa_targets=(0.5,))
    result = simulate_demand(STEP_UP, 60.0, LOOP, sweep=sweep, headroom=lambda w: None)
    assert set(result.frontier) == {
        "predictive",
        "hpa_target",
        "oracle",
        "static_floor",
        "hour_of_week",
        "phpa",
    }


def test_a_swept_hpa_target_is_the_hpas_own_target() -> None:
    # At 1-minute steps PHPA has no forecast before a day: it is the HPA at its target. So
    # the swept HPA and PHPA at 0.25 equal the reactive run of a scenario with target 0.25.
    sweep = SweepSettings(quantiles=(0.9,), hpa_targets=(0.5, 0.25), phpa_targets=(0.25,))
    result = simulate_demand(STEP_UP, 60.0, LOOP, sweep=sweep)
    quarter = simulate_demand(STEP_UP, 60.0, replace(LOOP, target=0.25)).runs["reactive"]
    half = result.runs["reactive"]
    assert quarter.gpu_hours != half.gpu_hours
    for name in ("hpa_target", "phpa"):
        point = result.frontier[name][-1]
        assert point.knob == 0.25
        assert (point.gpu_hours, point.underprovisioned_minutes) == (
            quarter.gpu_hours,
            quarter.underprovisioned_minutes,
        ), name


def test_a_static_floor_by_hand() -> None:
    # A floor of 4 (half of 8 peak replicas): 4 pods from step 2; at 24 demand 6 on 4 ready
    # reads 4 (ratio 2): 8, ready at 26; then 6 on 8 (ratio 1.5): 12, ready at 28. Pods at
    # the start of steps 20..39: 4 x 5, 8, 8, 12 x 13 = 192 pod-minutes; short at 24 and 25.
    sweep = SweepSettings(quantiles=(0.9,), floor_fractions=(0.5,))
    result = simulate_demand(STEP_UP, 60.0, replace(LOOP, peak_replicas=8), sweep=sweep)
    (point,) = result.frontier["static_floor"]
    assert point.knob == 4
    assert point.gpu_hours == pytest.approx(192 / 60)
    assert point.underprovisioned_minutes == 2.0
    assert point.unserved_pod_minutes == pytest.approx(4.0)


def test_the_oracle_is_clamped_to_max_replicas_and_the_base() -> None:
    s = replace(LOOP, min_replicas=3, max_replicas=5)
    result = simulate_demand(STEP_UP, 60.0, s)
    assert list(result.runs["oracle"].min_replicas[:21]) == [3] * 21
    assert list(result.runs["oracle"].min_replicas[21:]) == [5] * 19
    # The controller starts from the base too, before it decides anything (step 17).
    assert list(result.runs["predictive"].min_replicas[:17]) == [3] * 17


def test_the_oracle_looks_past_a_gap_and_needs_nothing_in_one() -> None:
    # Window of t .. t + 3: from step 5 it spans missing steps and reads the known ones;
    # steps 8 and 9 see only missing steps (the base); from 10 the window reaches the 6s.
    d = np.array([1.0] * 8 + [GAP] * 5 + [6.0] * 3)
    oracle = simulate_demand(d, 60.0, LOOP).runs["oracle"]
    assert list(oracle.min_replicas) == [2] * 8 + [1, 1] + [12] * 6


def test_phpa_has_a_day_of_steps_as_its_season() -> None:
    lanes = _make_lanes(np.ones(4), 1.0, LOOP, SweepSettings(phpa_targets=(0.5,)), 2)
    (phpa,) = [lane for lane in lanes if lane.hw is not None]
    assert phpa.hw is not None and phpa.hw.period == 86_400


HOURLY = replace(LOOP, warmup_seconds=3600, cycle_seconds=3600, stabilization_seconds=3600)


def test_the_forecast_window_is_the_warm_up_and_one_cycle() -> None:
    # Hourly steps, a 2-hour warm-up and a 1-hour cycle: the controller forecasts 3 steps.
    # Every day spikes to 6 at hour 12, which seasonal naive repeats exactly, so on the last
    # day it first sees the spike at hour 9 (window 10..12) and raises +4 a cycle from 2: 6,
    # 10, 12; the pods raised at 9 and 10 are ready by 11 and 12, and nothing is short.
    day = np.ones(24)
    day[12] = 6.0
    s = replace(
        HOURLY,
        warmup_seconds=7200,
        model="seasonal_naive",
        seasons=("daily",),
        history_seconds=7 * 86_400,
        refit_interval_seconds=86_400,
    )
    run = simulate_demand(np.tile(day, 8), 3600.0, s).runs["predictive"]
    assert list(run.min_replicas[-24:-12]) == [2] * 9 + [6, 10, 12]
    assert run.underprovisioned_minutes == 0.0


def test_phpa_on_a_steady_trace_holds_the_hpas_own_count() -> None:
    # Demand 1 at target 0.5: the HPA asks for 2 at step 0 and holds 2 (ratio 1). PHPA's
    # Holt-Winters on those counts forecasts exactly 2 from step 24, so minReplicas 2: the
    # window (steps 24..47) costs 2 pods an hour, as the HPA alone.
    sweep = SweepSettings(quantiles=(0.9,), hpa_targets=(0.5,), phpa_targets=(0.5,))
    result = simulate_demand(np.ones(48), 3600.0, HOURLY, sweep=sweep)
    (point,) = result.frontier["phpa"]
    assert point.gpu_hours == pytest.approx(48.0)
    assert result.runs["reactive"].gpu_hours == pytest.approx(48.0)


def test_phpa_scales_ahead_of_yesterdays_peak() -> None:
    # A daily spike at hour 12: the HPA alone meets it with 2 pods every day; PHPA learns the
    # counts the HPA computed and raises before the spike, paying for more pods.
    day = np.ones(24)
    day[12] = 6.0
    sweep = SweepSettings(quantiles=(0.9,), hpa_targets=(0.5,), phpa_targets=(0.5,))
    result = simulate_demand(np.tile(day, 4), 3600.0, HOURLY, sweep=sweep)
    (phpa,) = result.frontier["phpa"]
    reactive = result.runs["reactive"]
    assert phpa.gpu_hours > reactive.gpu_hours
    assert phpa.underprovisioned_minutes <= reactive.underprovisioned_minutes


def test_a_sweep_over_idle_steps_and_a_final_gap_runs_phpa() -> None:
    # An idle step asks the HPA's count with the base as its minimum; a trace ending on a
    # missing step keeps PHPA's last minReplicas there.
    d = np.array([1.0] * 30 + [0.0] * 5 + [1.0] * 12 + [GAP])
    sweep = SweepSettings(quantiles=(0.9,), hpa_targets=(0.5,), phpa_targets=(0.5,))
    result = simulate_demand(d, 3600.0, HOURLY, sweep=sweep)
    (point,) = result.frontier["phpa"]
    assert np.isfinite(point.gpu_hours)
    assert point.underprovisioned_minutes == 0.0


def test_a_window_with_a_missing_step_scores_only_the_known_ones() -> None:
    ones = np.ones(3, dtype=np.int64)
    run = _measure(np.array([GAP, 4.0, 2.0]), ones, ones, ones, 0, 60.0)
    # Known demand 6, of which 3 + 1 above the single ready pod.
    assert run.unserved_fraction == pytest.approx(4.0 / 6.0)
    assert run.underprovisioned_minutes == 2.0


def test_a_window_with_under_one_pods_worth_of_demand_is_still_scored() -> None:
    run = _measure(
        np.array([0.5]), np.zeros(1, np.int64), np.ones(1, np.int64), np.ones(1, np.int64), 0, 60.0
    )
    assert run.unserved_fraction == 1.0
