"""The forecasting contract every model meets, and the shared fit/calibrate machinery.

A model fits on the older part of its history, then walks forward through the most recent
part one observation at a time, forecasting from every origin. Those out-of-sample errors
calibrate its quantiles per horizon step and its bound on the window's peak
(``models.calibration``), and score it for the ``auto`` choice, so the uncertainty a model
reports is measured, not assumed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from models.calibration import VOLATILITY, Calibration, PeakCalibration, pinball
from models.errors import InsufficientHistory, InvalidSeries
from models.series import DAY_SECONDS, as_series, fill_gaps, season_points

__all__ = [
    "DEFAULT_QUANTILES",
    "VOLATILITY",
    "Calibration",
    "FloatArray",
    "Forecast",
    "Forecaster",
    "Model",
    "PeakCalibration",
    "calibration_points",
    "pinball",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_QUANTILES: tuple[float, ...] = (0.9,)


@dataclass(frozen=True)
class Forecast:
    """A forecast over ``len(mean)`` steps after the last observation."""

    mean: FloatArray
    """Point forecast per step (step 1 is one step after the last observation)."""
    quantiles: Mapping[float, FloatArray] = field(default_factory=dict)
    """Calibrated quantile paths, by probability level."""
    peaks: Mapping[float, float] = field(default_factory=dict)
    """Calibrated quantiles of the window's peak (the maximum over all ``len(mean)`` steps),
    by probability level: the capacity the window needs. Not the maximum of the quantile
    path, which is not a quantile of the maximum."""

    def quantile(self, level: float) -> FloatArray:
        """The path for ``level``; raises KeyError naming the levels that exist."""
        try:
            return self.quantiles[level]
        except KeyError:
            have = sorted(self.quantiles)
            raise KeyError(f"quantile {level} not forecast; have {have}") from None

    def peak(self, level: float) -> float:
        """The window-peak bound at ``level``; raises KeyError naming the levels that exist."""
        try:
            return self.peaks[level]
        except KeyError:
            have = sorted(self.peaks)
            raise KeyError(f"peak quantile {level} not forecast; have {have}") from None


@runtime_checkable
class Forecaster(Protocol):
    """What the controller and the backtest need from a model."""

    @property
    def name(self) -> str:
        """The registry name of the model that forecasts."""
        ...

    def fit(self, y: FloatArray, step_seconds: float) -> Self:
        """Estimate on a regular series (NaN = missing); returns self."""
        ...

    def update(self, y_new: FloatArray) -> Self:
        """Absorb observations that follow the history, without re-estimating."""
        ...

    def predict(self, horizon: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Forecast:
        """Forecast ``horizon`` steps with the requested quantile levels."""
        ...

    def describe(self) -> dict[str, Any]:
        """What was fitted and why, for logs, annotations and the CLI."""
        ...


_MAX_CALIBRATION_ORIGINS = 720


class Model(ABC):
    """Base of the single models: input checks, NaN handling, calibration, quantiles.

    Subclasses implement ``_fit`` (estimate and set state at the end of the history),
    ``_update`` (absorb one observation) and ``_mean`` (point path from the state).
    """

    name: ClassVar[str]
    cost: ClassVar[int]
    """Relative fitting cost; ties in the ``auto`` choice go to the cheaper model."""
    needs_season: ClassVar[bool] = False
    """The model is seasonal by construction: without a season it has nothing to repeat, so
    a configuration that names it with no season is refused."""
    fits_in_cycle: ClassVar[bool] = False
    """Its fit is as quick as the live loop's stand-in (no parameters to search, or one
    closed-form pass), so the loop awaits it within the cycle instead of deciding on a
    stand-in while it runs beside the cycles."""

    def __init__(
        self,
        horizon: int = 15,
        seasons: Sequence[str] = ("daily", "weekly"),
        level: float = 0.9,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 step, got {horizon}")
        self.horizon = horizon
        self.seasons = tuple(seasons)
        self.level = level
        self.calibration_: Calibration | None = None
        self.nonnegative_ = True
        self.notes_: list[str] = []
        self.volatility_ = 0.0
        self.last_value_ = math.nan

    # -- subclass hooks ------------------------------------------------------------------

    @abstractmethod
    def _min_points(self, step_seconds: float) -> int:
        """Fewest points ``_fit`` needs."""

    @abstractmethod
    def _fit(self, y: FloatArray, step_seconds: float) -> None:
        """Estimate on a gap-free series and leave the state after its last point."""

    @abstractmethod
    def _update(self, value: float) -> None:
        """Absorb one finite observation."""

    @abstractmethod
    def _mean(self, horizon: int) -> FloatArray:
        """Point forecast for the next ``horizon`` steps from the current state."""

    def _params(self) -> dict[str, Any]:
        return {}

    # -- the contract --------------------------------------------------------------------

    def fit(self, y: FloatArray, step_seconds: float) -> Self:
        series = as_series(y)
        if step_seconds <= 0:
            raise InvalidSeries(f"step must be positive, got {step_seconds}")
        observed = np.isfinite(series)
        if not observed.any():
            raise InsufficientHistory(f"{self.name}: history has no observed value")
        if observed.mean() < 0.5:
            raise InsufficientHistory(
                f"{self.name}: {100 * (1 - observed.mean()):.0f}% of the history is missing"
            )
        series = fill_gaps(series, season_points(DAY_SECONDS, step_seconds))
        self.nonnegative_ = bool((series >= 0).all())
        cal = calibration_points(len(series), self.horizon, step_seconds)
        train = series[: len(series) - cal]
        need = self._min_points(step_seconds)
        if len(train) < need:
            # The hold-out grows with the history, so the shortest history that fits is not
            # ``need + cal`` at this length (10 points asked for 15, and 15 then for 17).
            shortest = shortest_history(need, self.horizon, step_seconds)
            raise InsufficientHistory(
                f"{self.name}: needs {shortest} points "
                f"({_human(step_seconds * shortest)}), has {len(series)} "
                f"({_human(step_seconds * len(series))})"
            )
        self.notes_ = []
        self._vol_alpha = 2.0 / (max(12.0, 3_600.0 / step_seconds) + 1.0)
        self._fit(train, step_seconds)
        recent = train[-int(2 / self._vol_alpha) :]
        self.volatility_ = float(np.abs(np.diff(recent)).mean()) if len(recent) > 1 else 0.0
        self.last_value_ = float(train[-1])
        self.calibration_ = self._walk_forward(series[len(train) :])
        return self

    def update(self, y_new: FloatArray) -> Self:
        self._require_fitted()
        for value in np.asarray(y_new, dtype=np.float64).ravel():
            point = float(value)
            if not math.isfinite(point):
                # A missing point: the model carries its own one-step forecast forward.
                point = float(self._mean(1)[0])
            self._observe(point)
        return self

    def _observe(self, value: float) -> None:
        self.volatility_ += self._vol_alpha * (abs(value - self.last_value_) - self.volatility_)
        self.last_value_ = value
        self._update(value)

    def predict(self, horizon: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Forecast:
        calibration = self._require_fitted()
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 step, got {horizon}")
        mean = self._mean(horizon)
        if self.nonnegative_:
            mean = np.maximum(mean, 0.0)
        paths: dict[float, FloatArray] = {}
        peaks: dict[float, float] = {}
        for level in quantiles:
            if not 0.0 < level < 1.0:
                raise ValueError(f"quantile level must be in (0, 1), got {level}")
            path = mean + calibration.offsets(mean, level, self.volatility_)
            # Keep lower <= mean <= upper even for a biased model.
            path = np.maximum(path, mean) if level >= 0.5 else np.minimum(path, mean)
            if self.nonnegative_:
                path = np.maximum(path, 0.0)
            paths[level] = path
            peak = calibration.peak.bound(mean, level, self.volatility_)
            peaks[level] = max(peak, 0.0) if self.nonnegative_ else peak
        return Forecast(mean=mean, quantiles=paths, peaks=peaks)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"model": self.name, "params": self._params()}
        if self.calibration_ is not None:
            info["calibration_origins"] = int(self.calibration_.forecasts.shape[0])
            info["scale_power"] = self.calibration_.power
            info["peak_scale_power"] = self.calibration_.peak.power
        if self.notes_:
            info["notes"] = list(self.notes_)
        return info

    # -- internals -----------------------------------------------------------------------

    def _require_fitted(self) -> Calibration:
        if self.calibration_ is None:
            raise RuntimeError(f"{self.name}: fit() must be called before predict() or update()")
        return self.calibration_

    def _walk_forward(self, tail: FloatArray) -> Calibration:
        """Forecast from every origin in ``tail`` and compare with what followed."""
        n, h = len(tail), self.horizon
        # Every point is absorbed, but forecasts are taken from at most about
        # _MAX_CALIBRATION_ORIGINS origins: enough errors per step for a p90, at a fraction
        # of the cost on long one-minute histories.
        stride = max(1, n // _MAX_CALIBRATION_ORIGINS)
        rows = (n + stride - 1) // stride
        forecasts = np.empty((rows, h))
        actuals = np.full((rows, h), np.nan)
        volatility = np.empty(rows)
        for i in range(n):
            if i % stride == 0:
                row = i // stride
                forecasts[row] = self._mean(h)
                volatility[row] = self.volatility_
                upto = min(h, n - i)
                actuals[row, :upto] = tail[i : i + upto]
            self._observe(float(tail[i]))
        if self.nonnegative_:
            forecasts = np.maximum(forecasts, 0.0)
        return Calibration.from_errors(forecasts, actuals, volatility, self.level)


def calibration_points(n: int, horizon: int, step_seconds: float) -> int:
    """How many recent points to hold out for the out-of-sample walk.

    A quarter of the history, at most two days (so errors cover day and night) and at
    least enough for ``horizon`` plus a few dozen origins when the history allows.
    """
    two_days = max(int(2 * 86_400 / step_seconds), 1)
    wanted = min(n // 4, two_days)
    floor = min(n // 2, horizon + 40)
    return max(wanted, floor, 1)


def shortest_history(need: int, horizon: int, step_seconds: float) -> int:
    """The fewest points whose part before the hold-out (:func:`calibration_points`) has
    ``need`` points: what an ``InsufficientHistory`` message asks for."""
    n = max(need, 1)
    while n - calibration_points(n, horizon, step_seconds) < need:
        n += 1
    return n


def _human(seconds: float) -> str:
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
