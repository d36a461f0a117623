"""``models.base`` where mutmut found the suite blind (docs/testing.md lists the survivors that
remain and why): what the errors say, which levels and horizons are refused, the hold-out a
fit keeps, how durations read in messages, and the documented defaults."""

from __future__ import annotations

import numpy as np
import pytest

from models import make_model
from models.base import Forecast, Model, _human, calibration_points, shortest_history
from models.baseline import Persistence
from models.calibration import VOLATILITY
from models.errors import InsufficientHistory, InvalidSeries

STEP = 300.0
H = 4


def random_walk(n: int = 600, seed: int = 2) -> np.ndarray:
    return 200 + np.cumsum(np.random.default_rng(seed).normal(0, 2.0, n))


def fitted(y: np.ndarray, name: str = "persistence", horizon: int = H) -> Model:
    model = make_model(name, horizon=horizon, seasons=())
    assert isinstance(model, Model)
    return model.fit(y, STEP)


# -- what the errors say --------------------------------------------------------------------


def test_a_missing_level_names_the_levels_forecast() -> None:
    forecast = Forecast(np.zeros(2), {0.9: np.ones(2), 0.5: np.ones(2)}, {0.9: 1.0})
    with pytest.raises(KeyError, match=r"quantile 0\.8 not forecast; have \[0\.5, 0\.9\]"):
        forecast.quantile(0.8)
    with pytest.raises(KeyError, match=r"peak quantile 0\.5 not forecast; have \[0\.9\]"):
        forecast.peak(0.5)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1])
def test_a_level_outside_zero_one_is_refused(level: float) -> None:
    model = fitted(random_walk())
    with pytest.raises(ValueError, match=rf"quantile level must be in \(0, 1\), got {level}"):
        model.predict(H, (0.9, level))


def test_a_horizon_under_one_step_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^horizon must be >= 1 step, got 0$"):
        fitted(random_walk()).predict(0)
    with pytest.raises(ValueError, match=r"^horizon must be >= 1 step, got 0$"):
        Persistence(0)
    assert Persistence(1).horizon == 1


def test_durations_in_messages_read_in_the_largest_whole_unit() -> None:
    cases = {
        59.0: "59s",
        60.0: "1.0m",
        3_599.0: "60.0m",
        3_600.0: "1.0h",
        86_399.0: "24.0h",
        86_400.0: "1.0d",
        7 * 86_400.0: "7.0d",
    }
    assert {seconds: _human(seconds) for seconds in cases} == cases


# -- the hold-out ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "horizon", "step", "held_out", "why"),
    [
        (4000, 10, 300.0, 576, "two days of 5-minute steps, not a quarter (1000)"),
        (400, 10, 300.0, 100, "a quarter"),
        (100, 10, 300.0, 50, "the horizon plus 40 origins, more than a quarter (25)"),
        (60, 10, 300.0, 30, "at most half when the horizon plus 40 does not fit"),
        (1, 10, 300.0, 1, "at least one point"),
        (4000, 10, 60.0, 1000, "two days of 1-minute steps are more than a quarter"),
        (160, 10, 300.0, 50, "the horizon plus 40 origins, not 41"),
        (400_000, 10, 2.0, 86_400, "two days of 2-second steps exactly"),
    ],
)
def test_the_hold_out(n: int, horizon: int, step: float, held_out: int, why: str) -> None:
    assert calibration_points(n, horizon, step) == held_out, why


def test_the_shortest_history_is_the_first_that_leaves_the_need_before_the_hold_out() -> None:
    for need in (1, 10, 30, 200):
        n = shortest_history(need, H, STEP)
        assert n - calibration_points(n, H, STEP) >= need
        assert n - 1 - calibration_points(n - 1, H, STEP) < need


# -- defaults -------------------------------------------------------------------------------


def test_a_model_built_without_arguments_has_the_documented_defaults() -> None:
    model = Persistence()
    assert (model.horizon, model.seasons, model.level) == (15, ("daily", "weekly"), 0.9)


# -- the bands ------------------------------------------------------------------------------


def test_a_lower_band_on_noise_is_below_the_mean_not_collapsed_onto_it() -> None:
    forecast = fitted(random_walk()).predict(H, (0.1, 0.9))
    assert (forecast.quantile(0.1) < forecast.mean).all()
    assert (forecast.quantile(0.9) > forecast.mean).all()


def test_the_median_of_a_model_that_lags_a_ramp_sits_above_its_mean() -> None:
    # Persistence on a rising ramp under-forecasts every step: its calibrated median is the
    # mean plus the typical lag, above the mean at level 0.5 exactly.
    rng = np.random.default_rng(5)
    y = 100 + 0.5 * np.arange(600) + rng.normal(0, 0.2, 600)
    forecast = fitted(y).predict(H, (0.5,))
    assert (forecast.quantile(0.5) > forecast.mean + 0.25).all()


def test_small_non_negative_values_keep_their_bands_below_one() -> None:
    # A gauge between 0.1 and 0.5: nothing lifts a band or a bound to 1.
    y = 0.1 + 0.4 * np.random.default_rng(8).random(600)
    forecast = fitted(y).predict(H, (0.05, 0.9))
    assert (forecast.quantile(0.05) <= forecast.mean).all()
    assert (forecast.quantile(0.05) < 0.5).all()
    assert (forecast.quantile(0.9) < 1.0).all()
    assert 0.0 < forecast.peak(0.05) < 1.0 and forecast.peak(0.9) < 1.0


def test_a_low_level_window_bound_of_a_series_touching_zero_stays_at_zero_or_above() -> None:
    rng = np.random.default_rng(11)
    y = np.maximum(rng.normal(0.2, 0.5, 600), 0.0)
    assert fitted(y).predict(H, (0.05,)).peak(0.05) >= 0.0


def test_a_series_below_zero_is_forecast_below_zero() -> None:
    # A net flow can be negative: only a history that never went below zero is floored at it.
    y = -50 + np.random.default_rng(6).normal(0, 2.0, 600)
    forecast = fitted(y).predict(H, (0.9,))
    assert (forecast.mean < 0).all()
    assert (forecast.quantile(0.9) < 0).all()
    assert forecast.peak(0.9) < 0


def test_a_window_bound_below_zero_of_a_non_negative_series_is_raised_to_zero() -> None:
    # Spikes of 5 every fifth step: from a spike the window's peak is often 0, so the low
    # window bound from a last value of 0 is 5 below the forecast, and is floored at 0.
    y = np.tile([5.0, 0.0, 0.0, 0.0, 0.0], 120)
    model = fitted(y)
    assert model.calibration_ is not None
    assert model.calibration_.peak.bound(np.zeros(H), 0.05, model.volatility_) < 0
    assert model.predict(H, (0.05,)).peak(0.05) == 0.0


# -- the fit's checks -------------------------------------------------------------------------


def test_a_step_of_zero_is_refused_and_one_second_is_taken() -> None:
    with pytest.raises(InvalidSeries, match=r"^step must be positive, got 0\.0$"):
        Persistence(H).fit(random_walk(), 0.0)
    assert Persistence(H).fit(random_walk(), 1.0).predict(H).mean.shape == (H,)


def test_a_short_history_names_what_it_needs_and_has_in_time() -> None:
    model = make_model("seasonal_naive", horizon=H, seasons=("daily",))
    with pytest.raises(InsufficientHistory) as info:
        model.fit(random_walk(100), STEP)
    need = shortest_history(288, H, STEP)
    assert str(info.value) == (
        f"seasonal_naive: needs {need} points ({need * STEP / 86_400:.1f}d), has 100 (8.3h)"
    )


def test_a_gap_at_the_end_of_the_history_is_filled_from_a_day_earlier() -> None:
    # Hourly points over four days of a daily shape; the last two hours are missing. They
    # are filled with the same hours of the day before, so persistence goes on from there,
    # not from the last value seen.
    hours = np.arange(96)
    y = 100 + 50 * np.sin(2 * np.pi * hours / 24)
    y[-2:] = np.nan
    model = Persistence(H, seasons=()).fit(y, 3_600.0)
    assert model.predict(H).mean[0] == pytest.approx(y[-25])
    assert y[-25] != pytest.approx(y[-3])


# -- volatility -------------------------------------------------------------------------------


def expected_volatility(y: np.ndarray, step: float, horizon: int) -> float:
    """The recent volatility as documented on ``Model.fit``: the mean absolute one-step
    change over the last ``2 / alpha`` points of the fitted part, then an exponential
    average with ``alpha = 2 / (max(12, hour / step) + 1)`` over every later point."""
    alpha = 2.0 / (max(12.0, 3_600.0 / step) + 1.0)
    train = y[: len(y) - calibration_points(len(y), horizon, step)]
    recent = train[-int(2 / alpha) :]
    vol = float(np.abs(np.diff(recent)).mean()) if len(recent) > 1 else 0.0
    last = float(train[-1])
    for value in y[len(train) :]:
        vol += alpha * (abs(value - last) - vol)
        last = float(value)
    return vol


@pytest.mark.parametrize("step", [300.0, 60.0, 7_200.0])
def test_the_volatility_is_an_hour_of_steps_then_an_exponential_average(step: float) -> None:
    rng = np.random.default_rng(4)
    y = 100 + np.cumsum(rng.normal(0, 1, 600) * np.where(np.arange(600) % 7 == 0, 6.0, 1.0))
    model = Persistence(H, seasons=()).fit(y, step)
    assert model.volatility_ == pytest.approx(expected_volatility(y, step, H), rel=1e-12)
    model.update(np.array([y[-1] + 10.0, y[-1]]))
    alpha = 2.0 / (max(12.0, 3_600.0 / step) + 1.0)
    vol = expected_volatility(y, step, H)
    for change in (10.0, 10.0):
        vol += alpha * (change - vol)
    assert model.volatility_ == pytest.approx(vol, rel=1e-12)


@pytest.mark.parametrize(("n", "first_change"), [(2, 0.0), (3, 3.0)])
def test_the_volatility_of_a_history_of_two_or_three_points(n: int, first_change: float) -> None:
    # Two points fit one and hold out one: no change to average, so the fit starts from 0;
    # three fit two (one change of 3) and hold out one.
    y = np.array([10.0, 13.0, 14.0])[:n]
    model = Persistence(1, seasons=()).fit(y, STEP)
    alpha = 2.0 / 13.0
    assert model.volatility_ == pytest.approx(
        first_change + alpha * (1.0 if n == 3 else 3.0) - alpha * first_change
    )


def test_bursty_noise_is_calibrated_on_the_volatility_scale() -> None:
    # Calm and wild stretches of 50 steps: the error follows the recent volatility, which
    # the walk forward records per origin, so that scale is chosen for the bands and the peak.
    rng = np.random.default_rng(3)
    amp = np.where((np.arange(600) // 50) % 2 == 0, 0.2, 5.0)
    y = 200 + np.cumsum(rng.normal(0, 1, 600) * amp)
    model = fitted(y)
    assert model.calibration_ is not None
    assert model.calibration_.power == VOLATILITY
    assert model.calibration_.peak.power == VOLATILITY
