"""The cheap alternatives and the equal-cost comparison, pinned by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictive_scaler.baselines import (
    HoltWintersAdditive,
    SweepSettings,
    compute_iso_cost,
    compute_schedule_floor,
    compute_static_floors,
    lower_envelope,
    shortfall_at,
)


def test_schedule_floor_uses_the_previous_day_then_the_previous_week() -> None:
    # Hourly steps, no lead: the floor at hour h is last week's hour h once a week is
    # known, the previous day's hour h before that, nothing on the first day.
    demand = np.arange(200, dtype=float)
    floor = compute_schedule_floor(demand, 3600.0, target=0.5, margin=1.0, lead_steps=0)
    assert (floor[:24] == 0).all()
    assert floor[24] == 0  # hour 0 had demand 0
    assert floor[30] == 12  # ceil(6 / 0.5)
    assert floor[167] == 2 * 143
    assert floor[168] == 0  # a week known: hour 0 of last week
    assert floor[199] == 2 * 31


def test_schedule_floor_takes_the_hourly_peak_times_the_margin_one_lead_early() -> None:
    # 30-minute steps: hour k holds steps 2k and 2k + 1.
    demand = np.zeros(2 * 48)
    demand[2 * 5 + 1] = 3.0  # hour 5 of day 1 peaks at 3
    floor = compute_schedule_floor(demand, 1800.0, target=0.5, margin=1.5, lead_steps=1)
    # Step t serves the hour of t + 1: hour 29 (= 5 + 24) from step 57 on, up to step 58.
    assert list(floor[56:60]) == [0, 9, 9, 0]  # ceil(1.5 * 3 / 0.5) = 9


@settings(max_examples=60, deadline=None)
@given(
    seeds=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    cut=st.integers(0, 398),
    lead=st.integers(0, 100),
)
def test_schedule_floor_is_causal(seeds: tuple[int, int], cut: int, lead: int) -> None:
    # 30-minute steps over 200 hours (both the day and the week sources), leads up to
    # 50 hours: the floor up to `cut` never moves when demand after `cut` does.
    demand = np.random.default_rng(seeds[0]).gamma(2.0, 5.0, 400)
    changed = demand.copy()
    changed[cut + 1 :] = np.random.default_rng(seeds[1]).gamma(2.0, 5.0, 400)[cut + 1 :]
    a = compute_schedule_floor(demand, 1800.0, 0.7, 1.0, lead)
    b = compute_schedule_floor(changed, 1800.0, 0.7, 1.0, lead)
    np.testing.assert_array_equal(a[: cut + 1], b[: cut + 1])


def test_holt_winters_by_hand() -> None:
    hw = HoltWintersAdditive(period=2, alpha=0.5, beta=0.5, gamma=0.5)
    hw.update(2.0)
    assert hw.forecast_next() is None
    hw.update(4.0)  # level 3, trend 0, seasons [-1, 1]
    assert hw.forecast_next() == pytest.approx(2.0)
    hw.update(4.0)
    # level = 0.5 * (4 - -1) + 0.5 * 3 = 4; trend = 0.5 * 1 = 0.5;
    # season[0] = 0.5 * (4 - 4) + 0.5 * -1 = -0.5; next: 4 + 0.5 + season[1] = 5.5
    assert hw.forecast_next() == pytest.approx(5.5)


def test_holt_winters_follows_a_seasonal_series() -> None:
    hw = HoltWintersAdditive(period=24)
    pattern = [5 + 4 * np.sin(2 * np.pi * h / 24) for h in range(24)]
    for value in pattern * 3:
        hw.update(float(value))
    assert hw.forecast_next() == pytest.approx(pattern[0], abs=1e-6)


def test_static_floors_are_distinct_and_at_least_one() -> None:
    assert compute_static_floors(20, (0.01, 0.05, 0.1, 0.12, 1.0)) == [1, 2, 20]


def test_lower_envelope_keeps_the_non_dominated_points() -> None:
    points = [(10.0, 100.0), (12.0, 120.0), (15.0, 50.0), (15.0, 40.0), (20.0, 60.0)]
    assert lower_envelope(points) == [(10.0, 100.0), (15.0, 40.0)]


def test_iso_cost_interpolates_on_the_envelope() -> None:
    envelope = [(10.0, 100.0), (20.0, 40.0)]
    assert shortfall_at(envelope, 15.0) == (70.0, True)
    assert shortfall_at(envelope, 5.0) == (100.0, False)
    assert shortfall_at(envelope, 25.0) == (40.0, False)
    iso = compute_iso_cost([(20.0, 40.0), (12.0, 130.0), (10.0, 100.0)], 15.0, 35.0)
    assert iso.shortfall_minutes == pytest.approx(70.0)
    assert iso.ratio == pytest.approx(0.5)
    assert iso.within_sweep
    assert compute_iso_cost([(10.0, 0.0)], 15.0, 3.0).ratio is None


def test_sweep_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="quantiles"):
        SweepSettings(quantiles=(0.9, 1.0))
    with pytest.raises(ValueError, match="must not be empty"):
        SweepSettings(hpa_targets=())
