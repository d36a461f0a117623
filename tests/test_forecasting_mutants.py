"""What a user of ``TargetForecaster`` and the compacted live fit relies on, where mutmut found
the suite blind (docs/testing.md lists the survivors that remain and why).

- the window's figures at the horizon are the model's last step, not an earlier one;
- the model name, the backtest summary and the history floor follow each fit;
- a refit is due after exactly ``refit_points`` observed points, however they arrive;
- compaction keeps forecasts and summaries bit for bit while shrinking the fit, and refuses
  what it did not keep;
- the refit stagger is stable, in range, and spreads targets.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models import fit_model
from models.auto import Auto
from models.base import Model
from predictive_scaler.decision import compute_history_floor
from predictive_scaler.forecasting import (
    BacktestSummary,
    ForecastSettings,
    TargetForecaster,
    compact_fit,
    compute_backtest_summary,
    fit_compact,
    refit_offset,
    steps_covering,
)

STEP = 300.0
H = 4


def ramp(n: int = 600) -> np.ndarray:
    """A clean ramp the linear model extrapolates exactly: every step's value differs."""
    return 10.0 + 0.5 * np.arange(n, dtype=np.float64)


def noisy(n: int = 900, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100 + 30 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 4, n)


def settings(**kw: object) -> ForecastSettings:
    base: dict[str, object] = {
        "step_seconds": STEP,
        "horizon_seconds": H * STEP,
        "model": "linear",
        "seasons": (),
        "history_seconds": 600 * STEP,
        "refit_interval_seconds": 10 * STEP,
    }
    base.update(kw)
    return ForecastSettings(**base)  # type: ignore[arg-type]


# -- the window forecast --------------------------------------------------------------------


def test_a_window_shorter_than_a_step_is_one_step() -> None:
    assert steps_covering(0.0, STEP) == 1
    assert steps_covering(STEP / 2, STEP) == 1


def test_the_figures_at_the_horizon_are_the_last_step_of_the_window() -> None:
    y = ramp()
    forecaster = TargetForecaster(settings(quantile=0.8))
    forecaster.refit(y)
    window = forecaster.forecast()
    # The ramp one horizon past its last point (the linear model is exact on it).
    due = 10.0 + 0.5 * (len(y) - 1 + H)
    assert window.mean_at_horizon == pytest.approx(due, abs=1e-6)
    # An exact model's upper quantile is its mean; it is read at the level configured (0.8,
    # which is not the models' default level).
    assert window.upper_at_horizon == pytest.approx(due, abs=1e-6)
    assert window.upper_max == pytest.approx(due, abs=1e-6)
    assert window.model == "linear"
    assert window.horizon_seconds == H * STEP


def test_forecasting_before_any_fit_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"^no model fitted yet$"):
        TargetForecaster(settings()).forecast()


def test_a_forecast_that_overflows_is_refused_not_published() -> None:
    # Near the largest float a level-scaled bound overflows to inf; the controller must not
    # hand an infinite capacity to the decision.
    rng = np.random.default_rng(0)
    y = 1.5e308 * np.clip(1 + 0.1 * rng.normal(0, 1, 600), 0.5, 1.15)
    forecaster = TargetForecaster(settings(model="persistence"))
    with np.errstate(all="ignore"):
        forecaster.refit(y)
        with pytest.raises(ValueError, match=r"^model produced a non-finite forecast$"):
            forecaster.forecast()


def test_the_model_name_follows_each_fit() -> None:
    forecaster = TargetForecaster(settings())
    y = ramp()
    forecaster.refit(y)
    assert forecaster.forecast().model == "linear"
    forecaster.adopt(fit_model("persistence", y, STEP, H, ()))
    assert forecaster.forecast().model == "persistence"


def test_the_history_floor_is_learned_from_the_window_fitted_on() -> None:
    y = noisy()
    forecaster = TargetForecaster(settings(floor_quantile=0.3))
    forecaster.refit(y)
    expected = compute_history_floor(y[-600:], 0.3)
    assert expected is not None
    assert forecaster.forecast().floor == pytest.approx(expected)
    # A fit adopted without its window has no floor (the loop then decides on the bound).
    forecaster.adopt(fit_model("linear", y, STEP, H, ()))
    assert forecaster.forecast().floor is None


def test_the_backtest_summary_follows_the_fit_and_is_empty_before_one() -> None:
    forecaster = TargetForecaster(settings())
    assert forecaster.backtest_ == BacktestSummary()
    y = noisy()
    forecaster.refit(y)
    fresh = fit_model("linear", y[-600:], STEP, H, ())
    assert forecaster.backtest_ == compute_backtest_summary(fresh.model, H, 0.9)
    assert forecaster.backtest_.count > 0


# -- when a refit is due ----------------------------------------------------------------------


def test_a_refit_is_due_after_exactly_refit_points_observed_points() -> None:
    forecaster = TargetForecaster(settings())  # refit every 10 points
    # Points that arrive before the first fit are counted without a model to absorb them.
    forecaster.observe([1.0, 2.0])
    assert forecaster.needs_refit()
    y = ramp()
    forecaster.refit(y)
    assert not forecaster.needs_refit()
    forecaster.observe(y[:4])
    forecaster.observe(y[:5])
    assert not forecaster.needs_refit(), "9 of 10 points"
    forecaster.observe(y[:1])
    assert forecaster.needs_refit(), "10 of 10 points"


def test_a_fit_adopted_as_older_is_due_sooner() -> None:
    forecaster = TargetForecaster(settings())
    forecaster.adopt(fit_model("linear", ramp(), STEP, H, ()), age_points=7)
    forecaster.observe(np.ones(2))
    assert not forecaster.needs_refit()
    forecaster.observe(np.ones(1))
    assert forecaster.needs_refit()


# -- compaction --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return noisy()


def test_a_compacted_auto_forecasts_bit_for_bit_and_is_small(series: np.ndarray) -> None:
    kept = H + 3
    full = fit_model("auto", series, STEP, H, ("daily",), 0.8)
    compact = compact_fit(fit_model("auto", series, STEP, H, ("daily",), 0.8), H, 0.8, kept)
    assert isinstance(full.model, Auto) and isinstance(compact.model, Auto)
    size_full, size_compact = len(pickle.dumps(full)), len(pickle.dumps(compact))
    assert size_compact * 20 < size_full, (size_compact, size_full)
    # It keeps only the chosen candidate, which it still updates.
    assert set(compact.model.models_) == {compact.model.chosen.name}
    for steps in (1, H, kept):
        a, b = full.model.predict(steps, (0.8,)), compact.model.predict(steps, (0.8,))
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.quantile(0.8), b.quantile(0.8))
        assert a.peak(0.8) == b.peak(0.8)
    full.model.update(series[:5])
    compact.model.update(series[:5])
    np.testing.assert_array_equal(
        full.model.predict(H, (0.8,)).quantile(0.8), compact.model.predict(H, (0.8,)).quantile(0.8)
    )
    # What the user sees of the fit is unchanged too: origins, scale and backtest figures.
    chosen = full.model.chosen
    described = compact.model.describe()
    assert described["calibration_origins"] == full.model.describe()["calibration_origins"]
    assert described["calibration_origins"] > H
    assert compute_backtest_summary(compact.model, H, 0.8) == compute_backtest_summary(
        chosen, H, 0.8
    )
    # Compacting again changes nothing.
    again = compact_fit(compact, H, 0.8, kept)
    assert compute_backtest_summary(again.model, H, 0.8) == compute_backtest_summary(chosen, H, 0.8)


def test_a_compacted_fit_refuses_what_it_did_not_keep(series: np.ndarray) -> None:
    result = compact_fit(fit_model("linear", series, STEP, H, ()), H, 0.9)
    model = result.model
    assert isinstance(model, Model) and model.calibration_ is not None
    mean = model.predict(H).mean
    with pytest.raises(RuntimeError, match=r"keeps only \[\(0\.9, 4\)\]; asked for level 0\.5"):
        model.calibration_.offsets(mean, 0.5, 1.0)
    with pytest.raises(RuntimeError, match="over 5 steps"):
        model.calibration_.offsets(np.ones(H + 1), 0.9, 1.0)
    # A shorter window is a prefix of the kept path.
    np.testing.assert_array_equal(
        model.calibration_.offsets(mean[:2], 0.9, 1.0),
        model.calibration_.offsets(mean, 0.9, 1.0)[:2],
    )


def test_fit_compact_fits_at_the_quantile_it_is_given(series: np.ndarray) -> None:
    # The level changes which scale the calibration picks on this series (0.5: level-scaled
    # errors, 0.9: constant ones), so a fit at the wrong level forecasts other bands.
    live = fit_compact("seasonal_naive", series, STEP, H, ("daily",), 0.5)
    direct = compact_fit(fit_model("seasonal_naive", series, STEP, H, ("daily",), 0.5), H, 0.5)
    at_default = compact_fit(fit_model("seasonal_naive", series, STEP, H, ("daily",)), H, 0.5)
    band = live.model.predict(H, (0.5,)).quantile(0.5)
    np.testing.assert_array_equal(band, direct.model.predict(H, (0.5,)).quantile(0.5))
    assert not np.array_equal(band, at_default.model.predict(H, (0.5,)).quantile(0.5))


def test_an_exact_forecast_covers_what_it_forecasts() -> None:
    # A constant series: every forecast is exact, and a bound equal to the actual covers it.
    result = fit_model("persistence", np.full(400, 5.0), STEP, H, ())
    summary = compute_backtest_summary(result.model, H, 0.9)
    assert summary.count > 0 and summary.peak_count == summary.count
    assert summary.coverage == 1.0
    assert summary.peak_coverage == 1.0
    assert summary.abs_error == 0.0


# -- the refit stagger -------------------------------------------------------------------------


def test_the_refit_stagger_is_stable_and_in_range() -> None:
    # Pinned: the stagger must be the same in every process and release (a worker, a restarted
    # controller), or every target's refit schedule reshuffles.
    assert [refit_offset(key, 720) for key in ("default/llama", "prod/chat", "a")] == [
        52,
        327,
        623,
    ]
    assert refit_offset("default/llama", 1) == 0
    assert refit_offset("default/llama", 0) == 0
    offsets = {refit_offset(f"t{i}", 2) for i in range(6)}
    assert offsets == {0, 1}, "two refit slots are both used"
    assert all(isinstance(refit_offset(f"t{i}", 7), int) for i in range(5))
