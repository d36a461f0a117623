"""SARIMA(1,0,1)(0,1,0) with a daily seasonal difference, at bounded cost.

The seasonal difference is taken before fitting (simple differencing), so only a
three-parameter ARMA is estimated, on at most ``max_points`` recent differences, with
statsmodels' Hannan-Rissanen estimator: two least-squares regressions instead of an
iterative likelihood search, so the cost is bounded and does not depend on the optimiser.
The innovations recursion then runs in numpy. Without a full day of history the difference
is at lag 1, i.e. ARIMA(1,1,1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from statsmodels.tsa.arima.estimators.hannan_rissanen import hannan_rissanen

from models._smoothing import guarded
from models.base import FloatArray, Model
from models.series import DAY_SECONDS, season_points


class Sarima(Model):
    """ARMA(1,1) with a constant on the seasonally differenced series."""

    name: ClassVar[str] = "sarima"
    cost: ClassVar[int] = 6

    def __init__(
        self,
        horizon: int = 15,
        seasons: Sequence[str] = ("daily", "weekly"),
        level: float = 0.9,
        max_points: int = 4_000,
    ) -> None:
        super().__init__(horizon, seasons, level)
        self.max_points = max_points

    def _min_points(self, step_seconds: float) -> int:
        return 30

    def _fit(self, y: FloatArray, step_seconds: float) -> None:
        day = season_points(DAY_SECONDS, step_seconds)
        lag = day if day is not None and "daily" in self.seasons and len(y) >= day + 30 else 1
        if lag == 1 and day is not None:
            self.notes_.append("less than a day of history; differencing at lag 1")
        diff = y[lag:] - y[:-lag]
        recent = diff[-self.max_points :]
        mean = float(recent.mean())
        result = (
            guarded(lambda: hannan_rissanen(recent - mean, ar_order=1, ma_order=1, demean=False))
            if float(recent.std()) > 0
            else None
        )
        if result is None or not np.all(np.isfinite(result[0].params)):
            self.notes_.append("ARMA estimation failed; using the mean difference")
            phi, theta = 0.0, 0.0
        else:
            phi, theta = float(result[0].ar_params[0]), float(result[0].ma_params[0])
        # d_t = c + phi d_{t-1} + e_t + theta e_{t-1}, with the mean kept: c = mean (1 - phi).
        const = mean * (1.0 - float(np.clip(phi, -0.99, 0.99)))
        # Keep the recursion stable even if the optimiser stopped at the boundary.
        self.phi_ = float(np.clip(phi, -0.99, 0.99))
        self.theta_ = float(np.clip(theta, -0.99, 0.99))
        self.const_ = const
        self.lag_ = lag
        self.buffer_ = y[-lag:].copy()
        self.head_ = 0
        self.diff_, self.shock_ = 0.0, 0.0
        for d in diff:
            self._absorb_difference(float(d))

    def _absorb_difference(self, d: float) -> None:
        predicted = self.const_ + self.phi_ * self.diff_ + self.theta_ * self.shock_
        self.shock_ = d - predicted
        self.diff_ = d

    def _update(self, value: float) -> None:
        self._absorb_difference(value - float(self.buffer_[self.head_]))
        self.buffer_[self.head_] = value
        self.head_ = (self.head_ + 1) % self.lag_

    def _mean(self, horizon: int) -> FloatArray:
        diffs = np.empty(horizon)
        current = self.const_ + self.phi_ * self.diff_ + self.theta_ * self.shock_
        for k in range(horizon):
            diffs[k] = current
            current = self.const_ + self.phi_ * current
        out = np.empty(horizon)
        for k in range(horizon):
            base = (
                self.buffer_[(self.head_ + k) % self.lag_] if k < self.lag_ else out[k - self.lag_]
            )
            out[k] = base + diffs[k]
        return out

    def _params(self) -> dict[str, Any]:
        return {"lag": self.lag_, "const": self.const_, "ar": self.phi_, "ma": self.theta_}
