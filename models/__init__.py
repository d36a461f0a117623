"""Forecasting models for predictive-scaler.

numpy in, numpy out: every model fits on a regular series with its step, absorbs new
observations cheaply between refits, and forecasts a horizon with a mean and calibrated
quantiles. This package never imports ``predictive_scaler``.
"""

from models.base import Forecast, Forecaster
from models.errors import InsufficientHistory, InvalidSeries
from models.registry import (
    MODEL_NAMES,
    SEASONAL_MODEL_NAMES,
    FitResult,
    fit_model,
    fits_in_cycle,
    make_model,
)

__all__ = [
    "MODEL_NAMES",
    "SEASONAL_MODEL_NAMES",
    "FitResult",
    "Forecast",
    "Forecaster",
    "InsufficientHistory",
    "InvalidSeries",
    "fit_model",
    "fits_in_cycle",
    "make_model",
]
