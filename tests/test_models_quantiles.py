"""A single model's fit and forecast where mutants lived: each quantile level and each
horizon step gets its own calibrated offset (two hand mutants of issue 11, every level taking
the 0.9 offset and one step's quantile reused for every step, passed the rest of the suite);
what it describes; the shortest history it asks for; the missing share; the zero floor."""

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


def test_the_stated_need_is_exactly_the_shortest_history_that_fits() -> None:
    from models.errors import InsufficientHistory

    y = random_walk(3000)
    model = make_model("ses", horizon=H)
    assert isinstance(model, Model)
    try:
        model.fit(y[:10], STEP)
    except InsufficientHistory as error:
        message = str(error)
    else:
        raise AssertionError("10 points fitted")
    need = int(message.split("needs ", 1)[1].split(" points", 1)[0])
    assert message.startswith(f"ses: needs {need} points (")
    assert message.endswith(", has 10 (50.0m)")
    model.fit(y[:need], STEP)  # exactly the need fits
    try:
        model.fit(y[: need - 1], STEP)
    except InsufficientHistory:
        pass
    else:
        raise AssertionError(f"{need - 1} points fitted, the message said {need}")


def test_the_missing_share_is_stated_and_half_is_allowed() -> None:
    from models.errors import InsufficientHistory

    y = random_walk(2000)
    half = y.copy()
    half[::2] = np.nan  # exactly half missing: allowed (filled)
    fitted(half)
    more = y.copy()
    more[: int(0.6 * len(y))] = np.nan
    model = make_model("persistence", horizon=H)
    assert isinstance(model, Model)
    try:
        model.fit(more, STEP)
    except InsufficientHistory as error:
        assert str(error) == "persistence: 60% of the history is missing"
    else:
        raise AssertionError("60% missing fitted")


def test_a_history_touching_zero_never_forecasts_below_it() -> None:
    # Demand that is often exactly 0 (an idle model): the lower band and the mean stay >= 0.
    rng = np.random.default_rng(11)
    y = np.maximum(rng.normal(0.2, 0.5, 3000), 0.0)
    forecast = fitted(y).predict(H, (0.05, 0.9))
    assert (forecast.mean >= 0).all()
    assert (forecast.quantile(0.05) >= 0).all()
