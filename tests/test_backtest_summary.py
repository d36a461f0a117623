"""The backtest summary the controller shows for each fit (``recommend``, the fit log):
computed from the fitted model's own walk forward at the horizon, the same figures whether
the model is single, ``auto`` (its chosen one) or compacted for the live loop."""

from __future__ import annotations

import numpy as np
import pytest

from models import make_model
from models.base import Model
from predictive_scaler.forecasting import BacktestSummary, compute_backtest_summary

STEP = 300.0
H = 6


def random_walk(n: int = 2000, seed: int = 5) -> np.ndarray:
    return 500 + np.cumsum(np.random.default_rng(seed).normal(0, 2.0, n))


def test_the_summary_is_the_walk_forward_at_the_horizon() -> None:
    model = make_model("persistence", horizon=H)
    assert isinstance(model, Model)
    model.fit(random_walk(), STEP)
    calibration = model.calibration_
    assert calibration is not None and calibration.peak is not None
    actual, mean, upper = calibration.errors_at(H, 0.9)
    peak, _, bound = calibration.peak.errors(H, 0.9)
    summary = compute_backtest_summary(model, H, 0.9)
    assert summary == BacktestSummary(
        pytest.approx(float(np.mean(np.abs(actual - mean)))),  # type: ignore[arg-type]
        pytest.approx(float(np.mean(actual <= upper))),  # type: ignore[arg-type]
        int(actual.size),
        pytest.approx(float(np.mean(peak <= bound))),  # type: ignore[arg-type]
        int(peak.size),
    )
    assert summary.count > 0 and summary.peak_count > 0
    assert 0.0 < (summary.coverage or 0.0) < 1.0
    # A wider level covers more: the summary reads the level it is given.
    assert (compute_backtest_summary(model, H, 0.99).coverage or 0.0) > (summary.coverage or 0.0)


def test_auto_is_summarised_by_its_chosen_model() -> None:
    auto = make_model("auto", horizon=H)
    auto.fit(random_walk(), STEP)
    chosen = auto.chosen  # type: ignore[attr-defined]
    assert compute_backtest_summary(auto, H, 0.9) == compute_backtest_summary(chosen, H, 0.9)


def test_no_model_no_summary() -> None:
    assert compute_backtest_summary(None, H, 0.9) == BacktestSummary()
