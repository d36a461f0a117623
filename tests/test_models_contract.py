"""One contract, every registered model: shapes, finiteness, ordering, determinism, and
behaviour on short, gappy and degenerate input."""

from __future__ import annotations

import numpy as np
import pytest

from models import MODEL_NAMES, InsufficientHistory, InvalidSeries, fit_model, make_model
from models.base import Forecaster

STEP = 300.0  # 5-minute steps keep a day at 288 points: fast, yet seasonal
DAY = 288


def daily_series(days: float, seed: int = 0, level: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(days * DAY))
    shape = 1.0 + 0.6 * np.sin(2 * np.pi * t / DAY)
    return rng.poisson(level * shape).astype(np.float64)


@pytest.fixture(scope="module")
def history() -> np.ndarray:
    return daily_series(5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forecast_has_horizon_length_finite_values_and_ordered_quantiles(
    name: str, history: np.ndarray
) -> None:
    model = make_model(name, horizon=6).fit(history, STEP)
    forecast = model.predict(9, (0.1, 0.5, 0.9))
    assert forecast.mean.shape == (9,)
    for level in (0.1, 0.5, 0.9):
        assert forecast.quantile(level).shape == (9,)
        assert np.isfinite(forecast.quantile(level)).all()
    assert np.isfinite(forecast.mean).all()
    assert (forecast.quantile(0.1) <= forecast.mean + 1e-9).all()
    assert (forecast.mean <= forecast.quantile(0.9) + 1e-9).all()
    assert (forecast.quantile(0.1) >= 0).all(), "non-negative history gives non-negative bands"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_refit_is_deterministic(name: str, history: np.ndarray) -> None:
    first = make_model(name, horizon=6).fit(history, STEP).predict(6, (0.9,))
    second = make_model(name, horizon=6).fit(history, STEP).predict(6, (0.9,))
    np.testing.assert_array_equal(first.mean, second.mean)
    np.testing.assert_array_equal(first.quantile(0.9), second.quantile(0.9))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_update_absorbs_new_points_like_the_history(name: str, history: np.ndarray) -> None:
    model = make_model(name, horizon=6).fit(history[:-12], STEP)
    before = model.predict(6).mean.copy()
    model.update(history[-12:])
    after = model.predict(6).mean
    assert isinstance(model, Forecaster)
    assert np.isfinite(after).all()
    # Twelve new points (an hour) must move a forecast of a sine-shaped series.
    assert not np.allclose(before, after)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_missing_points_are_filled_not_zeroed(name: str, history: np.ndarray) -> None:
    gappy = history.copy()
    gappy[100:130] = np.nan  # a gap of 2.5 hours
    gappy[-50:-45] = np.nan
    forecast = make_model(name, horizon=6).fit(gappy, STEP).predict(6)
    assert np.isfinite(forecast.mean).all()
    assert forecast.mean.min() > 10, "a gap must not read as zero demand"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_nan_in_update_carries_the_forecast(name: str, history: np.ndarray) -> None:
    model = make_model(name, horizon=6).fit(history, STEP)
    model.update(np.array([np.nan, np.nan]))
    assert np.isfinite(model.predict(6).mean).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_constant_and_zero_series(name: str) -> None:
    for value in (0.0, 7.0):
        y = np.full(3 * DAY, value)
        forecast = fit_model(name, y, STEP, horizon=6).model.predict(6, (0.9,))
        np.testing.assert_allclose(forecast.mean, value, atol=1e-6)
        assert np.isfinite(forecast.quantile(0.9)).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_short_history_falls_back_and_says_why(name: str) -> None:
    short = daily_series(0.5)  # half a day: no daily season can be fitted
    result = fit_model(name, short, STEP, horizon=6)
    assert np.isfinite(result.model.predict(6).mean).all()
    if name in ("seasonal_naive", "mstl"):
        assert result.model.name != name
        assert any("needs" in note for note in result.notes)


def test_nothing_to_fit_is_a_clear_error() -> None:
    with pytest.raises(InsufficientHistory, match="no observed value"):
        fit_model("persistence", np.full(50, np.nan), STEP, horizon=3)
    with pytest.raises(InsufficientHistory, match="missing"):
        y = daily_series(1)
        y[: int(len(y) * 0.7)] = np.nan
        make_model("ses", horizon=3).fit(y, STEP)


def test_infinite_values_are_rejected() -> None:
    y = daily_series(1)
    y[5] = np.inf
    with pytest.raises(InvalidSeries, match="infinite value at index 5"):
        make_model("persistence", horizon=3).fit(y, STEP)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'prophet'; known: persistence"):
        make_model("prophet", horizon=3)


def test_predict_before_fit_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        make_model("holt_winters", horizon=3).predict(3)
