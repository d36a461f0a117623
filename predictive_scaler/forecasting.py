"""One target's model over time: refit on a schedule, absorb new points in between.

Shared by the backtest and the live loop, so both forecast the same way. Fitting is the
expensive part; callers run ``refit`` off the event loop. No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models import FitResult, Forecaster, fit_model

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ForecastSettings:
    """How a target is forecast."""

    step_seconds: float
    horizon_seconds: float
    """Warm-up plus one cycle: capacity must cover the whole window."""
    model: str = "auto"
    quantile: float = 0.9
    seasons: tuple[str, ...] = ("daily", "weekly")
    history_seconds: float = 7 * 86_400.0
    refit_interval_seconds: float = 21_600.0

    @property
    def horizon_steps(self) -> int:
        return steps_for(self.horizon_seconds, self.step_seconds)

    @property
    def history_points(self) -> int:
        return steps_for(self.history_seconds, self.step_seconds)

    @property
    def refit_points(self) -> int:
        return steps_for(self.refit_interval_seconds, self.step_seconds)


def steps_for(duration_seconds: float, step_seconds: float) -> int:
    """A duration in steps: rounded, at least one."""
    return max(1, round(duration_seconds / step_seconds))


@dataclass(frozen=True)
class WindowForecast:
    """The forecast the decision uses, and what the user sees."""

    mean_at_horizon: float
    upper_at_horizon: float
    upper_max: float
    """Maximum of the upper quantile over the whole window."""
    model: str
    horizon_seconds: float


class TargetForecaster:
    """A fitted model plus the bookkeeping of when it was fitted."""

    def __init__(self, settings: ForecastSettings) -> None:
        self.settings = settings
        self.fit_: FitResult | None = None
        self.points_since_fit = 0

    @property
    def model(self) -> Forecaster | None:
        return self.fit_.model if self.fit_ is not None else None

    def needs_refit(self) -> bool:
        return self.fit_ is None or self.points_since_fit >= self.settings.refit_points

    def refit(self, history: FloatArray) -> FitResult:
        """Fit on the latest ``history_seconds`` of ``history``; raises InsufficientHistory."""
        s = self.settings
        window = np.asarray(history, dtype=np.float64)[-s.history_points :]
        result = fit_model(s.model, window, s.step_seconds, s.horizon_steps, s.seasons, s.quantile)
        self.fit_ = result
        self.points_since_fit = 0
        return result

    def adopt(self, result: FitResult) -> None:
        """Take a fit made elsewhere (a worker thread or process)."""
        self.fit_ = result
        self.points_since_fit = 0

    def observe(self, values: FloatArray | Sequence[float]) -> None:
        """Absorb points that follow the history; NaN marks a missing point."""
        arr = np.asarray(values, dtype=np.float64)
        if self.fit_ is not None and arr.size:
            self.fit_.model.update(arr)
        self.points_since_fit += int(arr.size)

    def forecast(self) -> WindowForecast:
        if self.fit_ is None:
            raise RuntimeError("no model fitted yet")
        s = self.settings
        forecast = self.fit_.model.predict(s.horizon_steps, (s.quantile,))
        upper = forecast.quantile(s.quantile)
        peak = float(np.max(upper))
        if not math.isfinite(peak):
            raise ValueError("model produced a non-finite forecast")
        return WindowForecast(
            mean_at_horizon=float(forecast.mean[-1]),
            upper_at_horizon=float(upper[-1]),
            upper_max=peak,
            model=str(self.fit_.model.describe()["model"]),
            horizon_seconds=s.horizon_steps * s.step_seconds,
        )
