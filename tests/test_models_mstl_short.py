"""MSTL on the shortest history it accepts (two days to train on): statsmodels drops every
period that is not under half the series and then fails on an empty list; the model must
fall back to no seasonal profile instead (found by the objective's chooser, whose replays
fit on half a target's history)."""

from __future__ import annotations

import numpy as np
import pytest

from models.mstl import MSTLModel


@pytest.mark.parametrize("points", [383, 384])
def test_mstl_on_its_shortest_history_fits_without_a_seasonal_profile(points: int) -> None:
    # 383 points of 10 minutes: the fit's training part is two days, 288 points, i.e. 2 x
    # the daily period of 144 (coarse 48 of 24): statsmodels keeps a period only under half.
    y = 5 + np.sin(np.arange(points) * 2 * np.pi / 144)
    model = MSTLModel(horizon=2, seasons=("daily", "weekly"))
    model.fit(y, 600.0)
    forecast = model.predict(2, (0.9,))
    assert np.isfinite(forecast.mean).all()
    assert "MSTL failed on this history; no seasonal profile" in model.notes_
