"""Shared arithmetic for the smoothing models: quiet statsmodels calls, EWMA level tuning."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
from scipy.signal import lfilter

from models.base import FloatArray

T = TypeVar("T")

ALPHA_GRID: FloatArray = np.array(
    [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0]
)


@contextmanager
def quiet() -> Iterator[None]:
    """statsmodels warns about convergence and frequency on ordinary data; we judge fits
    by their out-of-sample errors instead, so those warnings are not errors here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            yield


def guarded(fit: Callable[[], T]) -> T | None:
    """Run a statsmodels fit; None when it fails on degenerate data (constant, all zero)."""
    try:
        with quiet():
            return fit()
    except (ValueError, np.linalg.LinAlgError, ZeroDivisionError, IndexError):
        return None


def ewma(x: FloatArray, alpha: float) -> FloatArray:
    """Exponentially weighted level after each point, started at the first value."""
    out, _ = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[x[0] * (1.0 - alpha)])
    result: FloatArray = np.asarray(out, dtype=np.float64)
    return result


def tune_level_alpha(x: FloatArray, horizon: int) -> float:
    """The smoothing constant whose level best predicts ``x`` ``horizon`` steps ahead.

    Scored by mean absolute error at that horizon (what MASE measures), skipping the
    first points while the level settles.
    """
    if len(x) < horizon + 20:
        return 0.3
    burn = min(len(x) // 5, 200)
    best_alpha, best_err = 1.0, np.inf
    for alpha in ALPHA_GRID:
        level = ewma(x, float(alpha))
        err = np.abs(x[burn + horizon :] - level[burn : len(x) - horizon]).mean()
        if err < best_err - 1e-12:
            best_alpha, best_err = float(alpha), float(err)
    return best_alpha


def periodic_profile(coarse: FloatArray, factor: int) -> FloatArray:
    """Stretch one coarse seasonal cycle to the fine step by periodic interpolation.

    Coarse value j is the mean of fine points j*factor .. j*factor+factor-1, so it sits at
    their centre.
    """
    if factor == 1:
        return coarse.copy()
    period = len(coarse) * factor
    centres = np.arange(len(coarse)) * factor + (factor - 1) / 2.0
    fine = np.arange(period, dtype=np.float64)
    profile: FloatArray = np.interp(fine, centres, coarse, period=period)
    return profile
