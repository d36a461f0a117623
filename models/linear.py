"""Linear trend over a recent window, extrapolated: catches ramps with no season to learn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from models.base import FloatArray, Model


class LinearTrend(Model):
    """Least-squares line through the last ``window_seconds`` of history."""

    name: ClassVar[str] = "linear"
    cost: ClassVar[int] = 2
    fits_in_cycle: ClassVar[bool] = True

    def __init__(
        self,
        horizon: int = 15,
        seasons: Sequence[str] = ("daily", "weekly"),
        level: float = 0.9,
        window_seconds: float = 3_600.0,
    ) -> None:
        super().__init__(horizon, seasons, level)
        self.window_seconds = window_seconds

    def _window(self, step_seconds: float) -> int:
        # Long enough that one noisy point does not swing the slope.
        return max(round(self.window_seconds / step_seconds), 3 * self.horizon, 10)

    def _min_points(self, step_seconds: float) -> int:
        return min(self._window(step_seconds), 10)

    def _fit(self, y: FloatArray, step_seconds: float) -> None:
        window = min(self._window(step_seconds), len(y))
        self.buffer_ = y[-window:].copy()
        self.head_ = 0
        x = np.arange(window, dtype=np.float64)
        self.x_centered_: FloatArray = x - float(x.mean())
        self.sxx_ = float((self.x_centered_**2).sum())

    def _update(self, value: float) -> None:
        self.buffer_[self.head_] = value
        self.head_ = (self.head_ + 1) % len(self.buffer_)

    def _mean(self, horizon: int) -> FloatArray:
        ordered = np.roll(self.buffer_, -self.head_)
        window = len(ordered)
        intercept = float(ordered.mean())
        slope = float(self.x_centered_ @ ordered) / self.sxx_ if self.sxx_ > 0 else 0.0
        steps = (window - 1) / 2 + np.arange(1, horizon + 1, dtype=np.float64)
        out: FloatArray = np.asarray(intercept + slope * steps, dtype=np.float64)
        return out

    def _params(self) -> dict[str, Any]:
        return {"window_points": len(self.buffer_)}
