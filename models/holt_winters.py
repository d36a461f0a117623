"""Holt-Winters (additive, damped trend): estimated by statsmodels on a coarse step, run at
the native step.

statsmodels needs seconds to estimate a daily season of 1,440 one-minute points, so the
parameters are estimated on block means (at most 144 points a day, initial states from the
classical decomposition of the first two days rather than by the optimiser) and
carried to the native step: smoothing constants by compounding, the trend per step by
division, the seasonal cycle by interpolation. The recursion then runs at the native step,
so between refits each new point costs a few arithmetic operations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from models._smoothing import guarded, periodic_profile
from models.base import FloatArray, Model
from models.series import DAY_SECONDS, coarse_factor, coarsen, season_points

_MAX_COARSE_POINTS = 4_000


class HoltWinters(Model):
    """Damped additive trend with an additive daily season (none on short histories)."""

    name: ClassVar[str] = "holt_winters"
    cost: ClassVar[int] = 4

    def _min_points(self, step_seconds: float) -> int:
        return 20

    def _fit(self, y: FloatArray, step_seconds: float) -> None:
        period = season_points(DAY_SECONDS, step_seconds)
        seasonal = period is not None and "daily" in self.seasons and len(y) >= 2 * period
        if period is not None and not seasonal and "daily" in self.seasons:
            self.notes_.append("daily season needs two days of history; fitted without it")
        if seasonal:
            assert period is not None
            factor = coarse_factor(period)
        else:
            period = None
            factor = max(1, len(y) // _MAX_COARSE_POINTS + 1)
        coarse, offset = coarsen(y, factor)
        if len(coarse) > _MAX_COARSE_POINTS:
            # Keep whole seasons so the coarse series still starts at phase 0.
            keep = _MAX_COARSE_POINTS - (_MAX_COARSE_POINTS % (period // factor if period else 1))
            offset += (len(coarse) - keep) * factor
            coarse = coarse[-keep:]
        coarse_period = period // factor if period else None
        # The optimiser's tolerances assume unit scale: fit on a standardised copy.
        centre = float(coarse.mean())
        spread = float(coarse.std()) or 1.0
        unit = (coarse - centre) / spread

        result = guarded(
            lambda: ExponentialSmoothing(
                unit,
                trend="add",
                damped_trend=True,
                seasonal="add" if coarse_period else None,
                seasonal_periods=coarse_period,
                initialization_method="heuristic" if coarse_period else "estimated",
            ).fit()
        )
        if result is None:
            self.notes_.append("statsmodels could not estimate; using fixed smoothing constants")
            alpha, beta, gamma, phi = 0.3, 0.05, 0.1, 0.98
            level0, trend0 = float(coarse[0]), 0.0
            season0 = np.zeros(coarse_period or 1)
        else:
            p = result.params
            alpha = float(p["smoothing_level"])
            beta = float(np.nan_to_num(p["smoothing_trend"]))
            gamma = float(np.nan_to_num(p.get("smoothing_seasonal", 0.0)))
            phi = float(np.nan_to_num(p["damping_trend"], nan=1.0))
            level0 = centre + spread * float(p["initial_level"])
            trend0 = spread * float(np.nan_to_num(p["initial_trend"]))
            season0 = (
                spread * np.asarray(p["initial_seasons"], dtype=np.float64)
                if coarse_period
                else np.zeros(1)
            )

        # From coarse to native step: a constant that smooths once per block smooths
        # 1 - (1 - a) ** (1 / factor) per point; a season slot is still visited once a day.
        self.alpha_ = 1.0 - (1.0 - alpha) ** (1.0 / factor)
        self.beta_ = 1.0 - (1.0 - beta) ** (1.0 / factor)
        self.phi_ = phi ** (1.0 / factor)
        self.gamma_ = gamma
        self.factor_ = factor
        self.season_ = periodic_profile(season0, factor) if coarse_period else np.zeros(1)
        self.level_, self.trend_ = level0, trend0 / factor
        self.slot_ = 0
        for value in y[offset:]:
            self._update(float(value))

    def _update(self, value: float) -> None:
        slot = self.slot_
        error = value - (self.level_ + self.phi_ * self.trend_ + self.season_[slot])
        self.level_ = self.level_ + self.phi_ * self.trend_ + self.alpha_ * error
        self.trend_ = self.phi_ * self.trend_ + self.alpha_ * self.beta_ * error
        self.season_[slot] += self.gamma_ * error
        self.slot_ = (slot + 1) % len(self.season_)

    def _mean(self, horizon: int) -> FloatArray:
        damp = np.cumsum(self.phi_ ** np.arange(1, horizon + 1))
        slots = (self.slot_ + np.arange(horizon)) % len(self.season_)
        out: FloatArray = self.level_ + damp * self.trend_ + self.season_[slots]
        return out

    def _params(self) -> dict[str, Any]:
        return {
            "alpha": round(self.alpha_, 5),
            "beta": round(self.beta_, 5),
            "gamma": round(self.gamma_, 5),
            "phi": round(self.phi_, 5),
            "seasonal": len(self.season_) > 1,
            "coarse_factor": self.factor_,
        }
