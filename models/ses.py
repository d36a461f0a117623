"""Simple exponential smoothing with the constant tuned for the forecast horizon.

The level is an exponentially weighted mean; its smoothing constant is the one whose level
best predicts the series ``horizon`` steps ahead (mean absolute error), not one step ahead
as likelihood fitting would choose. On noisy traffic that smooths away the noise a
persistence forecast copies, and on smooth traffic it becomes persistence (alpha = 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models._smoothing import ewma, tune_level_alpha
from models.base import FloatArray, Model


class SimpleExponentialSmoothing(Model):
    """A flat forecast at the smoothed level."""

    name: ClassVar[str] = "ses"
    cost: ClassVar[int] = 1
    fits_in_cycle: ClassVar[bool] = True

    def _min_points(self, step_seconds: float) -> int:
        return 10

    def _fit(self, y: FloatArray, step_seconds: float) -> None:
        self.alpha_ = tune_level_alpha(y, self.horizon)
        self.level_ = float(ewma(y, self.alpha_)[-1])

    def _update(self, value: float) -> None:
        self.level_ += self.alpha_ * (value - self.level_)

    def _mean(self, horizon: int) -> FloatArray:
        return np.full(horizon, self.level_)

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha_}
