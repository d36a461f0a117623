"""Each quantile level and each horizon step gets its own calibrated offset: two hand
mutants of issue 11 (every level taking the 0.9 offset; one step's quantile reused for every
step) passed the rest of the suite."""

from __future__ import annotations

import numpy as np

from models import make_model
from models.base import Model

STEP = 300.0
H = 12


def fitted(y: np.ndarray) -> Model:
    model = make_model("persistence", horizon=H)
    assert isinstance(model, Model)
    return model.fit(y, STEP)


def random_walk(n: int = 3000, seed: int = 3) -> np.ndarray:
    return 500 + np.cumsum(np.random.default_rng(seed).normal(0, 2.0, n))


def test_each_level_has_its_own_offset() -> None:
    forecast = fitted(random_walk()).predict(H, (0.6, 0.9, 0.99))
    mean = forecast.mean
    offsets = {level: forecast.quantile(level) - mean for level in (0.6, 0.9, 0.99)}
    # The wider the level, the wider the band, at every step past the first.
    assert (offsets[0.6][1:] < offsets[0.9][1:]).all(), offsets
    assert (offsets[0.9][1:] < offsets[0.99][1:]).all(), offsets


def test_each_step_has_its_own_quantile() -> None:
    # Persistence on a random walk: the error grows like sqrt(step), so the calibrated band
    # at the horizon is about sqrt(12) ~ 3.5 times the first step's, never the same.
    forecast = fitted(random_walk()).predict(H, (0.9,))
    band = forecast.quantile(0.9) - forecast.mean
    assert band[0] > 0
    assert band[-1] > 2.0 * band[0], band


def test_a_model_describes_its_calibration() -> None:
    model = fitted(random_walk())
    calibration = model.calibration_
    assert calibration is not None and calibration.peak is not None
    info = model.describe()
    assert info == {
        "model": "persistence",
        "params": info["params"],
        "calibration_origins": int(calibration.forecasts.shape[0]),
        "scale_power": calibration.power,
        "peak_scale_power": calibration.peak.power,
    }
    assert info["calibration_origins"] > 0
    model.notes_ = ["seasons dropped"]
    assert model.describe()["notes"] == ["seasons dropped"]
