"""Live scoring of past forecasts when their time comes: coverage is of the upper quantile
(it drives the shipped coverage alert), the error is of the mean, and the window's peak is
scored against the bound the decision took."""

from __future__ import annotations

import numpy as np
import pytest

from predictive_scaler.signal_buffer import PendingForecast as _Pending
from predictive_scaler.signal_buffer import SignalBuffer

STEP = 60.0


def state_with(points: list[float], *pending: _Pending) -> SignalBuffer:
    # Scoring needs only the buffer; the signal and its model are not consulted.
    state = SignalBuffer(capacity=16, step=STEP)
    state.append(0.0, np.array(points))
    state.pending.extend(pending)
    return state


@pytest.mark.parametrize(
    ("actual", "mean", "upper", "covered"),
    [
        (1.5, 1.0, 2.0, True),  # above the mean, under the upper quantile: covered
        (2.0, 1.0, 2.0, True),  # at the upper quantile: covered
        (2.5, 1.0, 2.0, False),  # above it: missed
        (0.5, 1.0, 2.0, True),  # under the mean too
    ],
)
def test_coverage_is_of_the_upper_quantile_and_error_of_the_mean(
    actual: float, mean: float, upper: float, covered: bool
) -> None:
    state = state_with([0.0, 0.0, actual], _Pending(due=2 * STEP, mean=mean, upper=upper))
    state.settle()
    assert list(state.covered) == [covered]
    assert list(state.errors) == [pytest.approx(abs(actual - mean))]
    assert not state.pending


def test_a_forecast_not_yet_due_waits() -> None:
    state = state_with([0.0, 1.0], _Pending(due=5 * STEP, mean=1.0, upper=2.0))
    state.settle()
    assert not state.covered and len(state.pending) == 1


def test_window_peak_is_scored_against_the_bound() -> None:
    # The window is steps 1..3; its realised peak 3.0 is inside it, not at its end.
    window = _Pending(due=3 * STEP, mean=1.0, upper=2.0, start=STEP, peak=2.5)
    state = state_with([0.0, 1.0, 3.0, 1.0], window)
    state.settle()
    assert list(state.covered) == [True]  # the last step (1.0) is under the upper quantile
    assert list(state.peak_covered) == [False]  # the peak (3.0) is above the bound
