"""Demand is the sum over pods, corrected for saturation by the queue."""

from __future__ import annotations

import numpy as np
import pytest

from predictive_scaler.demand import compute_demand, compute_uncorrected


def test_saturation_correction_recovers_queued_demand() -> None:
    usage = np.array([4.0, 4.0, 2.0])
    waiting = np.array([0.0, 2.0, np.nan])
    running = np.array([8.0, 8.0, 4.0])
    np.testing.assert_allclose(compute_demand(usage, waiting, running), [4.0, 5.0, 2.0])


def test_without_queue_usage_is_taken_as_is() -> None:
    np.testing.assert_array_equal(compute_demand(np.array([1.0, 2.0])), [1.0, 2.0])


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="queue series has 1 points"):
        compute_demand(np.ones(2), np.ones(1), np.ones(2))


def test_a_missing_running_series_is_never_assumed() -> None:
    # Issue 12 item 1: 2 pods at 0.7 with 5 waiting and no running series became 15.4.
    usage = np.array([1.4, 1.4, 1.4])
    waiting = np.array([5.0, 5.0, 5.0])
    running = np.array([np.nan, 10.0, np.nan])
    np.testing.assert_allclose(compute_demand(usage, waiting, running), [1.4, 2.1, 1.4])
    np.testing.assert_array_equal(compute_uncorrected(usage, waiting, running), [1, 0, 1])
    nothing = np.full(3, np.nan)
    np.testing.assert_allclose(compute_demand(usage, waiting, nothing), usage)
    with pytest.raises(ValueError, match="go together"):
        compute_demand(usage, waiting)


def test_steps_without_usage_are_not_flagged_uncorrected() -> None:
    usage = np.array([np.nan, 1.0])
    gaps = compute_uncorrected(usage, np.full(2, np.nan), np.full(2, np.nan))
    np.testing.assert_array_equal(gaps, [False, True])


def test_plain_lists_with_gaps_are_read_as_floats() -> None:
    # Python lists from a caller: integers come back as float demand and None is a gap.
    demand = compute_demand([1, 2], [None, 1], [4, None])  # type: ignore[arg-type]
    assert demand.dtype == np.float64
    np.testing.assert_array_equal(demand, [1.0, 2.0])
    assert compute_demand([1, 2]).dtype == np.float64  # type: ignore[arg-type]
    gaps = compute_uncorrected([None, 1], [None, 1], [None, None])  # type: ignore[arg-type]
    np.testing.assert_array_equal(gaps, [False, True])


def test_one_running_request_divides_by_one() -> None:
    demand = compute_demand(np.array([0.5]), np.array([1.0]), np.array([1.0]))
    np.testing.assert_allclose(demand, [1.0])


def test_errors_say_exactly_which_series_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^the queue and running series go together$"):
        compute_demand(np.ones(2), None, np.ones(2))
    with pytest.raises(ValueError, match=r"^running series has 1 points, usage has 2$"):
        compute_demand(np.ones(2), np.ones(2), np.ones(1))
