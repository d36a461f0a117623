"""Calibration of a model's uncertainty on its own out-of-sample walk forward.

A model walks forward through the recent part of its history (``models.base``), forecasting
from every origin before it absorbs the point there. Two things are calibrated on those
errors, both normalised by a scale known at the origin:

- per horizon step: the quantile path (:class:`Calibration`), what a forecast at one step
  claims;
- over the window: an upper bound of the window's peak (:class:`PeakCalibration`), the
  empirical quantile of (realised max over steps 1..w - forecast max over the same steps).
  The controller needs capacity for the highest point of the window, and the maximum of
  per-step p90s is not a p90 of the maximum: on noise it covers far less (0.9 ** w when the
  steps are independent), on a ramp the steps are correlated and it covers more.

Pure numpy: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_SCALE_POWERS = (0.0, 0.5, 1.0)
VOLATILITY = -1.0
"""Marks the volatility scale in ``Calibration.power``."""
_MIN_ERRORS_PER_STEP = 20


def pinball(actual: FloatArray, predicted: FloatArray, level: float) -> FloatArray:
    """Pinball (quantile) loss per point."""
    diff = actual - predicted
    return np.maximum(level * diff, (level - 1.0) * diff)


def _floors(actuals: FloatArray, volatility: FloatArray) -> tuple[float, float]:
    """Scale floors: 5 % of the typical level, and 10 % of the typical volatility."""
    finite = np.abs(actuals[np.isfinite(actuals)])
    floor = max(float(np.median(finite)) * 0.05 if finite.size else 0.0, 1e-9)
    vol_floor = max(float(np.median(volatility)) * 0.1 if volatility.size else 0.0, floor * 1e-3)
    return floor, vol_floor


@dataclass(frozen=True)
class Calibration:
    """Out-of-sample errors of a model, normalised by a scale known at the origin.

    Residuals of traffic grow with its level (Poisson-like at low counts, proportional at
    high ones) and cluster in bursts, so errors are divided either by
    ``max(|mean|, floor) ** power`` (power 0, 0.5 or 1) or by the recent volatility (an
    exponentially weighted mean absolute one-step change); the choice is the one with the
    lowest pinball loss on the calibration errors.
    """

    forecasts: FloatArray
    """Point forecasts, shape (origins, horizon)."""
    actuals: FloatArray
    """Observed values for the same cells; NaN past the end of the history."""
    volatility: FloatArray
    """Recent volatility at each origin."""
    power: float
    """Exponent of the level scale; ``VOLATILITY`` selects the volatility scale."""
    floor: float
    z: tuple[FloatArray, ...]
    """Sorted normalised residuals per horizon step."""
    peak: PeakCalibration
    """The window-peak bound, calibrated on the same walk."""
    _cache: dict[tuple[float, int], FloatArray] = field(default_factory=dict, compare=False)

    @classmethod
    def from_errors(
        cls, forecasts: FloatArray, actuals: FloatArray, volatility: FloatArray, level: float
    ) -> Calibration:
        floor, vol_floor = _floors(actuals, volatility)
        power = _best_power(forecasts, actuals, volatility, level, floor, vol_floor)
        z = (actuals - forecasts) / _scale(forecasts, volatility, power, floor, vol_floor)
        per_step = tuple(np.sort(col[np.isfinite(col)]) for col in z.T)
        return cls(
            forecasts,
            actuals,
            volatility,
            power,
            floor if power != VOLATILITY else vol_floor,
            per_step,
            PeakCalibration.from_errors(forecasts, actuals, volatility, level),
        )

    @property
    def horizon(self) -> int:
        return len(self.z)

    def scale(self, mean: FloatArray, volatility: float) -> FloatArray:
        if self.power == VOLATILITY:
            return np.full(len(mean), max(volatility, self.floor))
        return np.power(np.maximum(np.abs(mean), self.floor), self.power)

    def offsets(self, mean: FloatArray, level: float, volatility: float) -> FloatArray:
        """Quantile offsets to add to ``mean`` (one per step), from the stored errors."""
        key = (level, len(mean))
        zq = self._cache.get(key)
        if zq is None:
            zq = self._cache[key] = self._normalised_quantiles(len(mean), level)
        out: FloatArray = zq * self.scale(mean, volatility)
        return out

    def _normalised_quantiles(self, horizon: int, level: float) -> FloatArray:
        out = np.empty(horizon)
        pooled: FloatArray | None = None
        for k in range(horizon):
            if k < self.horizon and self.z[k].size >= _MIN_ERRORS_PER_STEP:
                zq = float(np.quantile(self.z[k], level))
            else:
                # Beyond the calibrated horizon the error keeps growing roughly like a
                # random walk: widen the last step's quantile by sqrt(k / H).
                if pooled is None:
                    pooled = _last_usable(self.z)
                stretch = math.sqrt((k + 1) / max(self.horizon, 1)) if k >= self.horizon else 1.0
                zq = float(np.quantile(pooled, level)) * stretch if pooled.size else 0.0
            out[k] = zq
        return out

    def errors_at(self, step: int, level: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(actual, forecast, upper quantile) at horizon step ``step`` (1-based), for the
        origins whose actual is known."""
        k = min(step, self.horizon) - 1
        actual, forecast = self.actuals[:, k], self.forecasts[:, k]
        keep = np.isfinite(actual)
        zq = self._normalised_quantiles(k + 1, level)[k]
        if self.power == VOLATILITY:
            scale = np.maximum(self.volatility, self.floor)
        else:
            scale = np.power(np.maximum(np.abs(forecast), self.floor), self.power)
        upper = forecast + zq * scale
        return actual[keep], forecast[keep], upper[keep]


@dataclass(frozen=True)
class PeakCalibration:
    """Out-of-sample errors of the window peak, normalised as :class:`Calibration` does.

    For every origin of the walk and every window length ``w`` (1 .. horizon): the realised
    maximum of the first ``w`` steps minus the maximum of the point forecast over the same
    steps, divided by a scale known at the origin (the level of the forecast peak to a power
    0, 0.5 or 1, or the recent volatility; the one with the lowest pinball loss of the
    full-window bound, as for the per-step quantiles). The bound at a level is the forecast
    peak plus that level's empirical quantile of the normalised errors, times the scale.
    """

    power: float
    """Exponent of the level scale; ``VOLATILITY`` selects the volatility scale."""
    floor: float
    z: tuple[FloatArray, ...]
    """Sorted normalised peak residuals per window length (index 0 = one step)."""
    forecast_peaks: FloatArray = field(default_factory=lambda: np.empty((0, 0)))
    """Running maximum of each origin's point forecast, shape (origins, horizon)."""
    actual_peaks: FloatArray = field(default_factory=lambda: np.empty((0, 0)))
    """Running maximum of what followed each origin; NaN where a step is unknown."""
    volatility: FloatArray = field(default_factory=lambda: np.empty(0))
    _cache: dict[tuple[float, int], float] = field(default_factory=dict, compare=False)

    @classmethod
    def from_errors(
        cls, forecasts: FloatArray, actuals: FloatArray, volatility: FloatArray, level: float
    ) -> PeakCalibration:
        forecast_peaks, actual_peaks = running_peaks(forecasts, actuals)
        floor, vol_floor = _floors(actuals, volatility)
        # The decision takes the bound over the whole window: choose the scale there.
        full = slice(forecasts.shape[1] - 1, forecasts.shape[1])
        power = _best_power(
            forecast_peaks[:, full], actual_peaks[:, full], volatility, level, floor, vol_floor
        )
        scale = _scale(forecast_peaks, volatility, power, floor, vol_floor)
        z = (actual_peaks - forecast_peaks) / scale
        per_window = tuple(np.sort(col[np.isfinite(col)]) for col in z.T)
        return cls(
            power,
            floor if power != VOLATILITY else vol_floor,
            per_window,
            forecast_peaks,
            actual_peaks,
            volatility,
        )

    @property
    def horizon(self) -> int:
        return len(self.z)

    def scale(self, peak: float, volatility: float) -> float:
        if self.power == VOLATILITY:
            return max(volatility, self.floor)
        return float(max(abs(peak), self.floor) ** self.power)

    def normalised_quantile(self, window: int, level: float) -> float:
        """The ``level`` quantile of the normalised peak error over ``window`` steps."""
        key = (level, window)
        zq = self._cache.get(key)
        if zq is None:
            zq = self._cache[key] = self._quantile(window, level)
        return zq

    def _quantile(self, window: int, level: float) -> float:
        k = window - 1
        if k < self.horizon and self.z[k].size >= _MIN_ERRORS_PER_STEP:
            return float(np.quantile(self.z[k], level))
        # Past the calibrated window (or too few errors there): the longest usable window,
        # widened like a random walk beyond the horizon, as the per-step quantiles are.
        pooled = _last_usable(self.z)
        stretch = math.sqrt(window / max(self.horizon, 1)) if window > self.horizon else 1.0
        return float(np.quantile(pooled, level)) * stretch if pooled.size else 0.0

    def bound(self, mean: FloatArray, level: float, volatility: float) -> float:
        """Upper bound at ``level`` of the maximum over the window ``mean`` covers."""
        peak = float(np.max(mean))
        out = peak + self.normalised_quantile(len(mean), level) * self.scale(peak, volatility)
        # Never below the point forecast's own peak (a biased model's errors can say so).
        return max(out, peak) if level >= 0.5 else min(out, peak)

    def errors(self, window: int, level: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(realised peak, forecast peak, bound) over ``window`` steps for every origin of the
        walk whose window is fully known: what ``auto`` scores and the backtest reports."""
        k = min(window, self.horizon) - 1
        actual, forecast = self.actual_peaks[:, k], self.forecast_peaks[:, k]
        keep = np.isfinite(actual)
        zq = self.normalised_quantile(k + 1, level)
        if self.power == VOLATILITY:
            scale = np.maximum(self.volatility, self.floor)
        else:
            scale = np.power(np.maximum(np.abs(forecast), self.floor), self.power)
        bound = forecast + zq * scale
        bound = np.maximum(bound, forecast) if level >= 0.5 else np.minimum(bound, forecast)
        return actual[keep], forecast[keep], bound[keep]

    def compact(self, level: float, window: int) -> CompactPeakCalibration:
        """Only what bounds windows of any length at ``level``: one quantile per window length
        up to ``window`` (and the calibrated horizon, from which longer ones are widened)."""
        longest = max(window, self.horizon, 1)
        return CompactPeakCalibration(
            power=self.power,
            floor=self.floor,
            z=(),
            level=level,
            quantiles=tuple(self.normalised_quantile(w, level) for w in range(1, longest + 1)),
            calibrated=self.horizon,
        )


@dataclass(frozen=True)
class CompactPeakCalibration(PeakCalibration):
    """A peak calibration reduced to one level: what the live loop keeps per target.

    Windows longer than those kept are widened from the calibrated horizon exactly as the full
    calibration does; another level raises instead of guessing.
    """

    level: float = 0.9
    quantiles: tuple[float, ...] = ()
    """Normalised quantile at ``level`` per window length (index 0 = one step)."""
    calibrated: int = 0
    """The window length the full calibration measured up to."""

    def _quantile(self, window: int, level: float) -> float:
        if level != self.level:
            raise RuntimeError(
                f"compacted peak calibration keeps only level {self.level}; asked for {level}"
            )
        if window <= len(self.quantiles):
            return self.quantiles[window - 1]
        base = self.quantiles[max(self.calibrated, 1) - 1] if self.quantiles else 0.0
        return base * math.sqrt(window / max(self.calibrated, 1))

    def errors(self, window: int, level: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        raise RuntimeError("compacted peak calibration keeps no errors")


def running_peaks(forecasts: FloatArray, actuals: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Running maxima along the horizon: forecast peak and realised peak over steps 1..w for
    every w; the realised one is NaN once a step of the window is unknown."""
    forecast_peaks: FloatArray = np.maximum.accumulate(forecasts, axis=1)
    known = np.logical_and.accumulate(np.isfinite(actuals), axis=1)
    filled = np.where(np.isfinite(actuals), actuals, -np.inf)
    actual_peaks: FloatArray = np.where(known, np.maximum.accumulate(filled, axis=1), np.nan)
    return forecast_peaks, actual_peaks


def _best_power(
    forecasts: FloatArray,
    actuals: FloatArray,
    volatility: FloatArray,
    level: float,
    floor: float,
    vol_floor: float,
) -> float:
    best: tuple[float, float] | None = None
    for power in (*_SCALE_POWERS, VOLATILITY):
        scale = _scale(forecasts, volatility, power, floor, vol_floor)
        loss = _calibration_loss(forecasts, actuals, scale, level)
        if best is None or loss < best[0] - 1e-12:
            best = (loss, power)
    assert best is not None
    return best[1]


def _scale(
    forecasts: FloatArray, volatility: FloatArray, power: float, floor: float, vol_floor: float
) -> FloatArray:
    if power == VOLATILITY:
        out: FloatArray = np.broadcast_to(
            np.maximum(volatility, vol_floor)[:, None], forecasts.shape
        ).copy()
        return out
    level_scale: FloatArray = np.power(np.maximum(np.abs(forecasts), floor), power)
    return level_scale


def _calibration_loss(
    forecasts: FloatArray, actuals: FloatArray, scale: FloatArray, level: float
) -> float:
    z = (actuals - forecasts) / scale
    total, count = 0.0, 0
    for k in range(z.shape[1]):
        keep = np.isfinite(z[:, k])
        if keep.sum() < _MIN_ERRORS_PER_STEP:
            continue
        q = np.quantile(z[keep, k], level)
        upper = forecasts[keep, k] + q * scale[keep, k]
        total += float(pinball(actuals[keep, k], upper, level).sum())
        count += int(keep.sum())
    return total / count if count else math.inf


def _last_usable(z: tuple[FloatArray, ...]) -> FloatArray:
    for col in reversed(z):
        if col.size >= _MIN_ERRORS_PER_STEP:
            return col
    return np.concatenate(z) if z else np.empty(0)
