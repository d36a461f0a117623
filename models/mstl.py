"""MSTL: daily and weekly seasons by statsmodels' MSTL on a coarse step, the rest by an
exponentially smoothed level tuned for the forecast horizon.

The seasonal cycle moves slowly, so it is decomposed on block means and refreshed at each
refit; the deseasonalised level moves fast, so it is smoothed at the native step with the
constant that best predicts it at the horizon the controller needs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from statsmodels.tsa.seasonal import MSTL

from models._smoothing import guarded, periodic_profile, tune_level_alpha
from models.base import FloatArray, Model
from models.series import DAY_SECONDS, WEEK_SECONDS, coarse_factor, coarsen, season_points


class MSTLModel(Model):
    """Seasonal profile (sum of the daily and weekly components) plus a smoothed level."""

    name: ClassVar[str] = "mstl"
    cost: ClassVar[int] = 5
    needs_season: ClassVar[bool] = True

    def _min_points(self, step_seconds: float) -> int:
        period = season_points(DAY_SECONDS, step_seconds)
        return 2 * period if period is not None else 2**62

    def _fit(self, y: FloatArray, step_seconds: float) -> None:
        day = season_points(DAY_SECONDS, step_seconds)
        week = season_points(WEEK_SECONDS, step_seconds)
        assert day is not None
        factor = coarse_factor(day)
        periods = [day // factor] if "daily" in self.seasons or week is None else []
        if "weekly" in self.seasons and week is not None:
            if len(y) >= 2 * week:
                periods.append(week // factor)
            else:
                self.notes_.append("weekly season needs two weeks of history; daily only")
        if not periods:
            periods = [day // factor]
        coarse, offset = coarsen(y, factor)
        # statsmodels keeps only periods under half the series, and with none left fails
        # with an UnboundLocalError; no seasonal profile is the same answer as a failed fit.
        usable = [p for p in periods if 2 * p < len(coarse)]
        result = guarded(lambda: MSTL(coarse, periods=usable).fit()) if usable else None
        cycle = max(periods)
        if result is None:
            self.notes_.append("MSTL failed on this history; no seasonal profile")
            profile_coarse = np.zeros(cycle)
        else:
            seasonal = np.asarray(result.seasonal, dtype=np.float64)
            total = seasonal.sum(axis=1) if seasonal.ndim == 2 else seasonal
            profile_coarse = total[-cycle:]
        self.profile_ = periodic_profile(profile_coarse, factor)
        self.periods_ = [p * factor for p in periods]
        # Fine index of the first point of the last coarse cycle = phase 0 of the profile.
        cycle_start = offset + (len(coarse) - cycle) * factor
        self.phase_ = (len(y) - cycle_start) % len(self.profile_)
        first_phase = (-cycle_start) % len(self.profile_)
        phases = (first_phase + np.arange(len(y))) % len(self.profile_)
        adjusted = y - self.profile_[phases]
        self.alpha_ = tune_level_alpha(adjusted, self.horizon)
        level = adjusted[0]
        for value in adjusted:
            level += self.alpha_ * (value - level)
        self.level_ = float(level)

    def _update(self, value: float) -> None:
        adjusted = value - self.profile_[self.phase_]
        self.level_ += self.alpha_ * (adjusted - self.level_)
        self.phase_ = (self.phase_ + 1) % len(self.profile_)

    def _mean(self, horizon: int) -> FloatArray:
        phases = (self.phase_ + np.arange(horizon)) % len(self.profile_)
        out: FloatArray = self.level_ + self.profile_[phases]
        return out

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "periods": self.periods_}
