"""The forecast window: from the newest point the model has seen to now + warm-up + interval,
whatever the step and however old that point is (issue 12 item 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictive_scaler.forecasting import ForecastSettings, TargetForecaster, steps_covering

WARMUP = 600.0
INTERVAL = 30.0
SLOPE = 0.001
"""Demand per second of a clean ramp the linear model extrapolates exactly."""


def ramp(step: float, days: float = 2.0) -> tuple[np.ndarray, float]:
    """A ramp of ``days`` at ``step`` and the epoch seconds of its last point (t=0 first)."""
    n = int(days * 86_400 / step)
    t = np.arange(n) * step
    return 1.0 + SLOPE * t, float(t[-1])


@pytest.mark.parametrize("step", [60.0, 300.0, 600.0])
@pytest.mark.parametrize("age_fraction", [0.0, 0.5, 0.99])
def test_window_reaches_now_plus_warmup_and_interval(step: float, age_fraction: float) -> None:
    settings = ForecastSettings(
        step_seconds=step,
        horizon_seconds=WARMUP + INTERVAL,
        model="linear",
        seasons=(),
        history_seconds=2 * 86_400.0,
        max_age_seconds=300.0,
    )
    forecaster = TargetForecaster(settings)
    values, last = ramp(step)
    forecaster.refit(values)
    age = age_fraction * step
    now = last + age
    window = forecaster.forecast(age_seconds=age)

    steps = math.ceil((WARMUP + INTERVAL + age) / step - 1e-9)
    assert window.horizon_seconds == steps * step
    # The window ends at or after now + warm-up + interval, less than a step after it.
    end = last + window.horizon_seconds
    assert now + WARMUP + INTERVAL <= end < now + WARMUP + INTERVAL + step
    # The ramp's value when the capacity must be there is inside the window's maximum.
    due = 1.0 + SLOPE * (now + WARMUP + INTERVAL)
    assert window.upper_max >= due - 1e-6


def test_horizon_steps_round_up() -> None:
    assert steps_covering(630.0, 60.0) == 11
    assert steps_covering(600.0, 60.0) == 10
    assert steps_covering(630.0, 300.0) == 3
    assert steps_covering(630.0, 600.0) == 2
    assert ForecastSettings(step_seconds=60.0, horizon_seconds=630.0).horizon_steps == 11


def test_a_stale_point_does_not_forecast_past_what_the_fit_kept() -> None:
    settings = ForecastSettings(
        step_seconds=60.0,
        horizon_seconds=630.0,
        model="linear",
        seasons=(),
        history_seconds=86_400.0,
        max_age_seconds=300.0,
    )
    forecaster = TargetForecaster(settings)
    forecaster.refit(ramp(60.0, days=1.0)[0])
    # Past staleAfter the signal is stale (the reconciler says so); the window stops at
    # what the compacted fit keeps instead of raising.
    window = forecaster.forecast(age_seconds=3_600.0)
    assert window.horizon_seconds == settings.kept_steps * 60.0
