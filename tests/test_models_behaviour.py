"""What the models should get right on series whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from models import fit_model, make_model
from models.auto import Auto
from models.base import Calibration
from models.evaluation import evaluate
from models.series import coarsen, fill_gaps, mask_ranges, naive_scale, regularize

STEP = 300.0
DAY = 288


def seasonal(days: int, seed: int = 1, noise: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    return 100 + 50 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, noise, len(t))


def test_seasonal_naive_repeats_yesterday() -> None:
    y = seasonal(3, noise=0.0)
    model = make_model("seasonal_naive", horizon=12, seasons=("daily",)).fit(y, STEP)
    np.testing.assert_allclose(model.predict(12).mean, y[-DAY : -DAY + 12])


@pytest.mark.parametrize("name", ["holt_winters", "mstl", "sarima"])
def test_seasonal_models_follow_the_daily_shape(name: str) -> None:
    y = seasonal(6)
    truth = 100 + 50 * np.sin(2 * np.pi * (len(y) + np.arange(24)) / DAY)
    forecast = make_model(name, horizon=24).fit(y, STEP).predict(24).mean
    assert np.abs(forecast - truth).mean() < 6.0


def test_linear_trend_extrapolates_a_ramp() -> None:
    y = np.arange(200, dtype=float) * 2.0
    forecast = make_model("linear", horizon=5).fit(y, STEP).predict(5).mean
    np.testing.assert_allclose(forecast, 400 + 2 * np.arange(5), atol=1e-6)


def test_quantiles_cover_what_they_claim_out_of_sample() -> None:
    rng = np.random.default_rng(7)
    y = 50 + rng.normal(0, 5, 6000)
    model = make_model("ses", horizon=3).fit(y[:3000], STEP)
    hits = []
    for i in range(3000, 5990):
        upper = model.predict(3, (0.9,)).quantile(0.9)[2]
        hits.append(y[i + 2] <= upper)
        model.update(y[i : i + 1])
    assert 0.87 <= np.mean(hits) <= 0.93


def test_calibration_scales_errors_with_the_level() -> None:
    rng = np.random.default_rng(3)
    level = np.repeat([10.0, 1000.0], 500)
    forecasts = level[:, None] * np.ones((1000, 2))
    actuals = forecasts * (1 + rng.normal(0, 0.1, forecasts.shape))
    calibration = Calibration.from_errors(forecasts, actuals, np.ones(1000), 0.9)
    assert calibration.power == 1.0, "multiplicative noise is scaled by the level"


def test_auto_picks_the_seasonal_model_on_seasonal_data_and_explains() -> None:
    model = make_model("auto", horizon=6)
    assert isinstance(model, Auto)
    model.fit(seasonal(6), STEP)
    info = model.describe()
    assert info["chosen"] in ("holt_winters", "mstl", "sarima", "seasonal_naive")
    assert set(info["scores"]) >= {"persistence", "seasonal_naive", "holt_winters"}
    assert info["model"] == f"auto:{info['chosen']}"


def test_auto_prefers_the_cheaper_model_on_a_tie() -> None:
    model = make_model("auto", horizon=3)
    assert isinstance(model, Auto)
    model.fit(np.full(3 * DAY, 5.0), STEP)
    assert model.chosen.name == "persistence"


def test_auto_skips_candidates_that_cannot_fit_and_says_why() -> None:
    model = make_model("auto", horizon=3)
    assert isinstance(model, Auto)
    model.fit(seasonal(1)[:200], STEP)
    assert "mstl" in model.skipped_
    assert "needs" in model.skipped_["mstl"]


def test_fit_model_falls_back_along_the_chain() -> None:
    result = fit_model("mstl", seasonal(1)[:100], STEP, horizon=3)
    assert result.model.name == "holt_winters"
    assert "mstl: needs" in result.notes[0]


def test_evaluation_scores_every_model_out_of_sample() -> None:
    y = seasonal(10)
    scores = evaluate(
        y,
        STEP,
        2,
        ["persistence", "seasonal_naive", "auto"],
        history_points=5 * DAY,
        refit_points=DAY,
        eval_start=7 * DAY,
    )
    assert set(scores) == {"persistence", "seasonal_naive", "auto"}
    for score in scores.values():
        assert score.origins == 3 * DAY - 1
        assert 0.75 <= score.coverage <= 1.0
    assert scores["auto"].chosen
    assert scores["auto"].mase <= 1.02 * min(
        scores["persistence"].mase, scores["seasonal_naive"].mase
    )


def test_regularize_puts_samples_on_a_grid_with_gaps_as_nan() -> None:
    start, step, grid = regularize(np.array([0.0, 60.0, 180.0]), np.array([1.0, 2.0, 4.0]))
    assert (start, step) == (0.0, 60.0)
    np.testing.assert_array_equal(grid[[0, 1, 3]], [1.0, 2.0, 4.0])
    assert np.isnan(grid[2])


def test_fill_gaps_prefers_the_value_a_season_earlier() -> None:
    y = np.array([1.0, 2.0, 3.0, 1.0, np.nan, 3.0, np.nan])
    np.testing.assert_array_equal(fill_gaps(y, 3), [1, 2, 3, 1, 2, 3, 1])


def test_mask_ranges_excludes_an_incident() -> None:
    y = mask_ranges(1000.0, 60.0, np.ones(10), [(1120.0, 1300.0)])
    assert np.isnan(y[2:5]).all()
    assert np.isfinite(y[[0, 1, 5]]).all()


def test_coarsen_aligns_blocks_to_the_end() -> None:
    coarse, offset = coarsen(np.arange(7, dtype=float), 3)
    assert offset == 1
    np.testing.assert_array_equal(coarse, [2.0, 5.0])


def test_naive_scale_of_a_constant_series_is_positive() -> None:
    assert naive_scale(np.full(10, 4.0)) > 0
