"""Baselines: persistence and seasonal naive. First-class models, and the fallbacks."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.base import FloatArray, Model
from models.series import DAY_SECONDS, WEEK_SECONDS, season_points


class Persistence(Model):
    """Tomorrow looks like now: the last observed value, flat."""

    name: ClassVar[str] = "persistence"
    cost: ClassVar[int] = 0
    fits_in_cycle: ClassVar[bool] = True

    def _min_points(self, step_seconds: float) -> int:
        return 1

    def _fit(self, y: FloatArray, step_seconds: float) -> None:
        self.last_ = float(y[-1])

    def _update(self, value: float) -> None:
        self.last_ = value

    def _mean(self, horizon: int) -> FloatArray:
        return np.full(horizon, self.last_)


class SeasonalNaive(Model):
    """The value one season ago: a week when the history holds two weeks, else a day."""

    name: ClassVar[str] = "seasonal_naive"
    cost: ClassVar[int] = 0
    fits_in_cycle: ClassVar[bool] = True
    needs_season: ClassVar[bool] = True

    def _period(self, step_seconds: float) -> int | None:
        return season_points(DAY_SECONDS, step_seconds)

    def _min_points(self, step_seconds: float) -> int:
        period = self._period(step_seconds)
        if period is None:
            # No whole number of steps per day: impossible at any length.
            return 2**62
        return period

    def _fit(self, y: FloatArray, step_seconds: float) -> None:
        period = self._period(step_seconds)
        assert period is not None
        weekly = season_points(WEEK_SECONDS, step_seconds)
        if "weekly" in self.seasons and weekly is not None:
            if len(y) >= 2 * weekly:
                period = weekly
            else:
                self.notes_.append("weekly season needs two weeks of history; using daily")
        self.period_ = period
        self.buffer_ = y[-period:].copy()
        self.head_ = 0  # index of the oldest value = one season before the next point

    def _update(self, value: float) -> None:
        self.buffer_[self.head_] = value
        self.head_ = (self.head_ + 1) % self.period_

    def _mean(self, horizon: int) -> FloatArray:
        index = (self.head_ + np.arange(horizon)) % self.period_
        out: FloatArray = self.buffer_[index]
        return out

    def _params(self) -> dict[str, Any]:
        return {"period": self.period_}
