"""Pure helpers that turn messy observations into a regular series fit for a model.

No I/O, only computation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from models.errors import InvalidSeries

FloatArray = npt.NDArray[np.float64]

DAY_SECONDS = 86_400.0
WEEK_SECONDS = 7 * DAY_SECONDS


def as_series(values: Iterable[float] | FloatArray) -> FloatArray:
    """A 1-D float copy; NaN marks a missing point, +-Inf is an error (never a silent zero)."""
    y = np.array(values, dtype=np.float64).ravel()
    if np.isinf(y).any():
        where = int(np.flatnonzero(np.isinf(y))[0])
        raise InvalidSeries(f"series has an infinite value at index {where}")
    return y


def season_points(season_seconds: float, step_seconds: float) -> int | None:
    """Points per season, or None when the step does not divide the season well enough."""
    if step_seconds <= 0:
        raise InvalidSeries(f"step must be positive, got {step_seconds}")
    points = season_seconds / step_seconds
    rounded = round(points)
    if rounded < 2 or abs(points - rounded) > 1e-6 * points:
        return None
    return int(rounded)


def from_first_observed(y: FloatArray) -> FloatArray:
    """``y`` from its first observed (finite) point on; unchanged when it has none.

    Time before the first sample is not missing data, only time before the series began:
    counted as missing, two days of a fresh install in a 7-day window read as 71 % gaps.
    """
    observed = np.flatnonzero(np.isfinite(y))
    if not observed.size or observed[0] == 0:
        return y
    return y[int(observed[0]) :]


def fill_gaps(y: FloatArray, period: int | None) -> FloatArray:
    """Fill NaN points: with the value one period earlier where known, else linearly.

    A seasonal copy keeps the shape of a long gap (an excluded incident spanning a peak);
    linear interpolation handles short gaps and series with no usable season.
    """
    out = y.copy()
    missing = np.isnan(out)
    if not missing.any():
        return out
    if missing.all():
        raise InvalidSeries("series has no observed value")
    if period is not None and period < len(out):
        # Forward in time so a gap longer than one period copies an already filled copy.
        for i in np.flatnonzero(missing):
            if i >= period and not math.isnan(out[i - period]):
                out[i] = out[i - period]
    still = np.isnan(out)
    if still.any():
        known = np.flatnonzero(~still)
        out[still] = np.interp(np.flatnonzero(still), known, out[known])
    return out


def coarsen(y: FloatArray, factor: int) -> tuple[FloatArray, int]:
    """Means over blocks of ``factor`` points aligned to the series end.

    Returns the coarse series and the offset of the first block in ``y``.
    """
    if factor <= 1:
        return y, 0
    offset = len(y) % factor
    blocks = y[offset:].reshape(-1, factor)
    return blocks.mean(axis=1), offset


def coarse_factor(period: int, max_coarse_period: int = 144) -> int:
    """The smallest divisor of ``period`` that brings it to at most ``max_coarse_period``."""
    for factor in range(1, period + 1):
        if period % factor == 0 and period // factor <= max_coarse_period:
            return factor
    return period


def naive_scale(y: FloatArray) -> float:
    """Mean absolute one-step change: the MASE denominator (Hyndman & Koehler, 2006)."""
    diffs = np.abs(np.diff(y))
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return 1.0
    scale = float(diffs.mean())
    if scale > 0:
        return scale
    level = float(np.nanmean(np.abs(y))) if np.isfinite(y).any() else 0.0
    return level * 1e-3 if level > 0 else 1.0


def regularize(
    timestamps: FloatArray, values: FloatArray, step_seconds: float | None = None
) -> tuple[float, float, FloatArray]:
    """Put irregular samples onto a regular grid: (start, step, values with NaN for gaps).

    The step defaults to the most common spacing (a median would be thrown off by gaps).
    Duplicate timestamps keep the last sample.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    vs = as_series(values)
    if ts.shape != vs.shape:
        raise InvalidSeries(f"{ts.size} timestamps but {vs.size} values")
    if ts.size == 0:
        raise InvalidSeries("series is empty")
    order = np.argsort(ts, kind="stable")
    ts, vs = ts[order], vs[order]
    if step_seconds is None:
        spacing = np.diff(ts)
        spacing = spacing[spacing > 0]
        if spacing.size == 0:
            raise InvalidSeries("need at least two distinct timestamps to infer the step")
        values_, counts = np.unique(np.round(spacing, 6), return_counts=True)
        step_seconds = float(values_[np.argmax(counts)])
    start = float(ts[0])
    index = np.rint((ts - start) / step_seconds).astype(np.int64)
    grid = np.full(int(index[-1]) + 1, np.nan)
    grid[index] = vs
    return start, float(step_seconds), grid


def mask_ranges(
    start: float, step_seconds: float, y: FloatArray, ranges: Iterable[tuple[float, float]]
) -> FloatArray:
    """Set the points inside each [begin, end) epoch-second range to NaN (excluded)."""
    out = y.copy()
    for begin, end in ranges:
        if end <= begin:
            raise InvalidSeries(f"exclusion range ends ({end}) before it begins ({begin})")
        lo = max(0, math.ceil((begin - start) / step_seconds))
        hi = min(len(out), math.ceil((end - start) / step_seconds))
        if lo < hi:
            out[lo:hi] = np.nan
    return out
