"""The per-signal ring buffer: appends across the capacity and around the ring, gaps, reset,
reads by time, the fetch window, and the live scoring of forecasts that come due."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictive_scaler.signal_buffer import LIVE_ERROR_WINDOW, PendingForecast, SignalBuffer

STEP = 60.0
NAN = math.nan


def buffer(capacity: int, *appends: tuple[float, list[float]]) -> SignalBuffer:
    buf = SignalBuffer(capacity, STEP)
    for start, points in appends:
        buf.append(start, np.array(points, dtype=np.float64))
    return buf


def same(a: np.ndarray, b: list[float]) -> bool:
    return bool(np.array_equal(a, np.array(b, dtype=np.float64), equal_nan=True))


# ---------------------------------------------------------------------------- append


@pytest.mark.parametrize(
    ("capacity", "appends", "values", "start"),
    [
        # empty
        (4, [], [], None),
        # within the capacity, one append and several
        (4, [(0.0, [1.0, 2.0])], [1.0, 2.0], 0.0),
        (4, [(0.0, [1.0]), (60.0, [2.0]), (120.0, [3.0])], [1.0, 2.0, 3.0], 0.0),
        # exactly full
        (4, [(0.0, [1.0, 2.0, 3.0, 4.0])], [1.0, 2.0, 3.0, 4.0], 0.0),
        # one append longer than the capacity keeps the newest points
        (3, [(0.0, [1.0, 2.0, 3.0, 4.0, 5.0])], [3.0, 4.0, 5.0], 120.0),
        # a full-capacity append onto points already there replaces them all
        (3, [(0.0, [1.0, 2.0]), (120.0, [3.0, 4.0, 5.0])], [3.0, 4.0, 5.0], 120.0),
        (3, [(0.0, [1.0, 2.0]), (120.0, [3.0, 4.0, 5.0, 6.0])], [4.0, 5.0, 6.0], 180.0),
        # a steady append to a full ring drops the oldest point (wrap-around)
        (3, [(0.0, [1.0, 2.0, 3.0]), (180.0, [4.0])], [2.0, 3.0, 4.0], 60.0),
        (3, [(0.0, [1.0, 2.0, 3.0]), (180.0, [4.0]), (240.0, [5.0])], [3.0, 4.0, 5.0], 120.0),
        (
            3,
            [(0.0, [1.0, 2.0, 3.0]), (180.0, [4.0]), (240.0, [5.0]), (300.0, [6.0])],
            [4.0, 5.0, 6.0],
            180.0,
        ),
        # an append that itself wraps around the end of the ring
        (4, [(0.0, [1.0, 2.0, 3.0]), (180.0, [4.0, 5.0])], [2.0, 3.0, 4.0, 5.0], 60.0),
        (4, [(0.0, [1.0, 2.0, 3.0]), (180.0, [4.0, 5.0, 6.0])], [3.0, 4.0, 5.0, 6.0], 120.0),
        (
            5,
            [(0.0, [1.0, 2.0, 3.0, 4.0]), (240.0, [5.0, 6.0]), (360.0, [7.0, 8.0])],
            [4.0, 5.0, 6.0, 7.0, 8.0],
            180.0,
        ),
        # gaps in the data are NaN points: they take their place in the ring
        (4, [(0.0, [1.0, NAN]), (120.0, [NAN, 4.0])], [1.0, NAN, NAN, 4.0], 0.0),
        # the first point of an empty buffer sits at the given start
        (4, [(300.0, [7.0])], [7.0], 300.0),
        # an empty append changes nothing, and the first points then start where they are
        (4, [(0.0, [1.0]), (60.0, [])], [1.0], 0.0),
        (4, [(0.0, []), (120.0, [1.0])], [1.0], 120.0),
        # a full-capacity append onto a ring that had wrapped
        (
            3,
            [(0.0, [1.0, 2.0, 3.0]), (180.0, [4.0]), (240.0, [5.0, 6.0, 7.0])],
            [5.0, 6.0, 7.0],
            240.0,
        ),
    ],
)
def test_append_keeps_the_newest_capacity_points_in_order(
    capacity: int,
    appends: list[tuple[float, list[float]]],
    values: list[float],
    start: float | None,
) -> None:
    buf = buffer(capacity, *appends)
    assert same(buf.values, values)
    assert buf.size == len(values)
    assert buf.start == start
    assert buf.last == (None if start is None else start + (len(values) - 1) * STEP)


@pytest.mark.parametrize(
    ("appends", "values"),
    [
        ([(0.0, [1.0, 2.0, 3.0])], [1.0, 2.0, 3.0]),  # in one piece of the ring
        ([(0.0, [1.0, 2.0, 3.0, 4.0]), (240.0, [5.0])], [2.0, 3.0, 4.0, 5.0]),  # in two
    ],
)
def test_values_and_windows_are_copies(
    appends: list[tuple[float, list[float]]], values: list[float]
) -> None:
    buf = buffer(4, *appends)
    for got in (buf.values, buf.window(2)):
        got[:] = -1.0
    assert same(buf.values, values)


def test_the_ring_is_allocated_once() -> None:
    buf = buffer(4, (0.0, [1.0, 2.0, 3.0]))
    ring = buf._ring
    buf.append(180.0, np.array([4.0, 5.0]))
    buf.append(300.0, np.array([6.0, 7.0, 8.0, 9.0, 10.0]))
    assert buf._ring is ring and ring.size == 4


def test_append_takes_lists_as_floats() -> None:
    buf = SignalBuffer(3, STEP)
    buf.append(0.0, [1, 2])  # type: ignore[arg-type]
    assert buf.values.dtype == np.float64 and same(buf.values, [1.0, 2.0])


# ---------------------------------------------------------------------------- window


@pytest.mark.parametrize(
    ("points", "window"),
    [
        (0, []),
        (-2, []),
        (1, [6.0]),
        (2, [5.0, 6.0]),
        (3, [4.0, 5.0, 6.0]),  # across the end of the ring
        (4, [3.0, 4.0, 5.0, 6.0]),
        (9, [3.0, 4.0, 5.0, 6.0]),  # at most all
    ],
)
def test_window_is_the_newest_points_oldest_first(points: int, window: list[float]) -> None:
    # Ring [5, 6, 3, 4] with the oldest point at index 2.
    buf = buffer(4, (0.0, [1.0, 2.0, 3.0]), (180.0, [4.0, 5.0, 6.0]))
    assert buf._head == 2
    assert same(buf.window(points), window)


def test_window_of_a_ring_not_yet_wrapped() -> None:
    buf = buffer(5, (0.0, [1.0, 2.0, 3.0]))
    assert same(buf.window(2), [2.0, 3.0])
    assert same(buf.window(5), [1.0, 2.0, 3.0])


def test_window_of_an_empty_buffer() -> None:
    assert same(SignalBuffer(4, STEP).window(3), [])
    assert same(SignalBuffer(0, STEP).window(3), [])


# ---------------------------------------------------------------------------- reset


def test_reset_forgets_the_points_and_the_newest_sample() -> None:
    buf = buffer(3, (0.0, [1.0, 2.0, 3.0]), (180.0, [4.0]))
    buf.newest_sample = 170.0
    assert buf.observed_seconds() == 3 * STEP
    ring = buf._ring
    buf.reset()
    assert (buf.start, buf.size, buf.last, buf.newest_sample) == (None, 0, None, None)
    assert same(buf.values, [])
    assert math.isnan(buf.value_at(60.0))
    assert buf.observed_seconds() == 0.0 and buf.newest_finite() is None
    # The next append starts afresh at its own start, in the same allocation.
    buf.append(600.0, np.array([NAN, 9.0]))
    assert buf._ring is ring
    assert buf.start == 600.0 and same(buf.values, [NAN, 9.0])
    assert buf.observed_seconds() == STEP  # not the cached oldest point from before
    assert buf.newest_finite() == 660.0


def test_reset_keeps_the_pending_forecasts_and_the_live_error() -> None:
    buf = buffer(4, (0.0, [1.0, 2.0]))
    buf.pending.append(PendingForecast(60.0, 1.0, 3.0))
    buf.settle()
    buf.pending.append(PendingForecast(600.0, 1.0, 3.0))
    buf.reset()
    assert list(buf.errors) == [1.0] and len(buf.pending) == 1


# ---------------------------------------------------------------------------- value_at


@pytest.mark.parametrize(
    ("when", "value"),
    [
        (120.0, 1.0),  # the oldest point
        (300.0, 4.0),  # the newest
        (180.0, 2.0),
        (185.0, 2.0),  # the nearest step
        (215.0, 3.0),
        (91.0, 1.0),
        (89.0, NAN),  # nearer the step before the buffer
        (60.0, NAN),
        (329.0, 4.0),
        (331.0, NAN),  # nearer the step after the newest point
        (360.0, NAN),
    ],
)
def test_value_at_reads_the_nearest_step(when: float, value: float) -> None:
    # Points at 120 .. 300 s in a ring that has wrapped.
    buf = buffer(4, (0.0, [9.0, 9.0, 1.0, 2.0]), (240.0, [3.0, 4.0]))
    assert buf.start == 120.0 and buf._head == 2
    got = buf.value_at(when)
    assert (math.isnan(got) and math.isnan(value)) or got == value


def test_value_at_of_an_empty_buffer() -> None:
    assert math.isnan(SignalBuffer(4, STEP).value_at(0.0))


# ---------------------------------------------------------------------------- history


@pytest.mark.parametrize(
    ("capacity", "appends", "observed", "newest"),
    [
        (4, [], 0.0, None),
        (4, [(0.0, [1.0])], STEP, 0.0),
        (4, [(0.0, [1.0, 2.0, 3.0])], 3 * STEP, 120.0),
        # leading gaps are not history the model has
        (4, [(0.0, [NAN, NAN, 3.0, 4.0])], 2 * STEP, 180.0),
        # a trailing gap still counts up to the newest point, but the newest finite is older
        (4, [(0.0, [1.0, 2.0, NAN])], 3 * STEP, 60.0),
        (4, [(0.0, [NAN, 2.0, NAN, NAN])], 3 * STEP, 60.0),
        # nothing observed
        (4, [(0.0, [NAN, NAN])], 0.0, None),
        # after the ring wrapped
        (3, [(0.0, [1.0, 2.0, 3.0]), (180.0, [4.0, 5.0])], 3 * STEP, 240.0),
        (3, [(0.0, [1.0, NAN, NAN]), (180.0, [4.0])], STEP, 180.0),
        (3, [(0.0, [1.0, 2.0, 3.0]), (180.0, [NAN])], 3 * STEP, 120.0),
    ],
)
def test_observed_seconds_and_newest_finite(
    capacity: int,
    appends: list[tuple[float, list[float]]],
    observed: float,
    newest: float | None,
) -> None:
    buf = buffer(capacity, *appends)
    assert buf.observed_seconds() == observed
    assert buf.newest_finite() == newest


def test_observed_seconds_follows_the_ring_when_it_drops_the_oldest_observed_point() -> None:
    buf = buffer(3, (0.0, [NAN, 1.0, 2.0]))
    assert buf.observed_seconds() == 2 * STEP
    buf.append(180.0, np.array([3.0]))  # the NaN at 0 s is dropped: 60 s is still the oldest
    assert buf.observed_seconds() == 3 * STEP
    buf.append(240.0, np.array([NAN, NAN]))  # 60 s and 120 s dropped: 180 s is the oldest
    assert buf.observed_seconds() == 3 * STEP
    buf.append(360.0, np.array([NAN]))  # every observed point dropped
    assert buf.observed_seconds() == 0.0
    buf.append(420.0, np.array([5.0]))
    assert buf.observed_seconds() == STEP


def test_observed_seconds_after_a_reset_forgets_the_oldest_observed_point() -> None:
    buf = buffer(4, (120.0, [1.0, 2.0]))
    assert buf.observed_seconds() == 2 * STEP
    buf.reset()
    buf.append(0.0, np.array([1.0, 2.0, 3.0, 4.0]))  # older than the point it had
    assert buf.observed_seconds() == 4 * STEP


def test_an_empty_append_is_no_history() -> None:
    buf = buffer(4, (0.0, []))
    assert buf.size == 0 and buf.last is None
    assert buf.observed_seconds() == 0.0 and buf.newest_finite() is None


# ---------------------------------------------------------------------------- fetch window


@pytest.mark.parametrize(
    ("appends", "now", "window"),
    [
        # the first fetch asks for the whole history, on the step grid
        ([], 600.0, (420.0, 600.0)),
        ([], 659.0, (420.0, 600.0)),
        ([], 660.0, (480.0, 660.0)),
        # later ones only for what follows the newest point
        ([(420.0, [1.0, 2.0])], 600.0, (540.0, 600.0)),
        ([(420.0, [1.0, 2.0, 3.0, 4.0])], 600.0, (660.0, 600.0)),  # nothing new: start > end
        ([(420.0, [1.0, 2.0, 3.0, 4.0])], 660.0, (660.0, 660.0)),
        # after a gap longer than the history, the whole history again
        ([(0.0, [1.0])], 600.0, (420.0, 600.0)),
        ([(0.0, [1.0, 2.0, 3.0, 4.0])], 600.0, (420.0, 600.0)),
        ([(0.0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])], 600.0, (420.0, 600.0)),
        ([(0.0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])], 600.0, (480.0, 600.0)),
    ],
)
def test_fetch_window(
    appends: list[tuple[float, list[float]]], now: float, window: tuple[float, float]
) -> None:
    assert buffer(4, *appends).fetch_window(now) == window


# ---------------------------------------------------------------------------- settle


def scored(points: list[float], *pending: PendingForecast) -> SignalBuffer:
    buf = buffer(16, (0.0, points))
    buf.pending.extend(pending)
    buf.settle()
    return buf


@pytest.mark.parametrize(
    ("actual", "mean", "upper", "error", "covered"),
    [
        (1.5, 1.0, 2.0, 0.5, True),
        (2.0, 1.0, 2.0, 1.0, True),  # at the upper bound
        (2.5, 1.0, 2.0, 1.5, False),
        (0.5, 1.0, 2.0, 0.5, True),  # under the mean: the error is absolute
        (5e-13, 0.0, 0.0, 5e-13, True),  # within rounding of the bound
        (1e-12, 0.0, 0.0, 1e-12, True),  # at the end of the rounding allowance
        (3e-12, 0.0, 0.0, 3e-12, False),  # beyond it
        (1.5, 1.0, 1.0, 0.5, False),
    ],
)
def test_a_due_forecast_is_scored_on_its_mean_and_upper_bound(
    actual: float, mean: float, upper: float, error: float, covered: bool
) -> None:
    buf = scored([0.0, 0.0, actual], PendingForecast(due=2 * STEP, mean=mean, upper=upper))
    assert list(buf.errors) == [pytest.approx(error, abs=1e-15)]
    assert list(buf.covered) == [covered]
    assert not buf.pending and not buf.peak_covered  # no window: no peak score


@pytest.mark.parametrize(
    ("due", "left"),
    [
        (2 * STEP, 0),  # due at the newest point
        (STEP, 0),
        (2 * STEP + 1.0, 1),  # due after it: waits
        (10 * STEP, 1),
    ],
)
def test_a_forecast_waits_until_its_time_is_in_the_buffer(due: float, left: int) -> None:
    buf = scored([1.0, 1.0, 1.0], PendingForecast(due=due, mean=1.0, upper=2.0))
    assert len(buf.pending) == left
    assert len(buf.errors) == len(buf.covered) == 1 - left


def test_forecasts_are_settled_in_order_up_to_the_first_not_due() -> None:
    buf = scored(
        [1.0, 2.0, 3.0],
        PendingForecast(STEP, 0.0, 5.0),
        PendingForecast(10 * STEP, 0.0, 5.0),
        PendingForecast(2 * STEP, 0.0, 5.0),  # due, but behind one that is not
    )
    assert list(buf.errors) == [2.0]
    assert [p.due for p in buf.pending] == [10 * STEP, 2 * STEP]


def test_a_forecast_due_on_a_gap_is_dropped_unscored() -> None:
    buf = scored([1.0, NAN, 1.0], PendingForecast(STEP, 1.0, 2.0))
    assert not buf.pending and not buf.errors and not buf.covered


def test_a_forecast_due_before_the_buffer_is_dropped_unscored() -> None:
    buf = buffer(3, (0.0, [1.0, 2.0, 3.0]), (180.0, [4.0, 5.0]))
    buf.pending.append(PendingForecast(0.0, 1.0, 2.0))
    buf.settle()
    assert not buf.pending and not buf.errors


def test_nothing_settles_in_an_empty_buffer() -> None:
    buf = SignalBuffer(4, STEP)
    buf.pending.append(PendingForecast(-1e9, 1.0, 2.0))
    buf.settle()
    assert len(buf.pending) == 1


@pytest.mark.parametrize(
    ("points", "start", "peak", "peak_covered"),
    [
        # window 60 .. 180 s: its realised peak 3.0 is inside it, not at its end
        ([0.0, 1.0, 3.0, 1.0], STEP, 2.5, [False]),
        ([0.0, 1.0, 3.0, 1.0], STEP, 3.0, [True]),  # at the bound
        ([0.0, 1.0, 3.0, 1.0], STEP, 3.0 - 1e-9, [False]),
        ([0.0, 1.0, 3.0, 1.0], 2 * STEP, 3.0, [True]),
        ([0.0, 1.0, 1.0, 3.0], STEP, 2.5, [False]),  # the peak at the window's last step
        ([0.0, 0.0, 1e-12, 0.0], STEP, 0.0, [True]),  # at the end of the rounding allowance
        ([0.0, 0.0, 3e-12, 0.0], STEP, 0.0, [False]),
        ([9.0, 1.0, 2.0, 1.0], STEP, 2.0, [True]),  # a point before the window does not count
        ([0.0, 1.0, 2.0, 1.0], 3 * STEP, 1.0, [True]),  # a one-step window
        ([0.0, 1.0, 2.0, 1.0], 3 * STEP, 0.5, [False]),
        # a window with a step not observed is not scored
        ([0.0, NAN, 3.0, 1.0], STEP, 9.0, []),
        ([0.0, 1.0, NAN, 1.0], STEP, 9.0, []),
        # a window starting before the buffer, or after its own end, is not scored
        ([0.0, 1.0, 3.0, 1.0], -STEP, 9.0, []),
        ([0.0, 1.0, 3.0, 1.0], 4 * STEP, 9.0, []),
        # no bound or no start: no peak score
        ([0.0, 1.0, 3.0, 1.0], STEP, NAN, []),
        ([0.0, 1.0, 3.0, 1.0], NAN, 9.0, []),
    ],
)
def test_a_due_window_is_scored_on_its_realised_peak(
    points: list[float], start: float, peak: float, peak_covered: list[bool]
) -> None:
    buf = scored(points, PendingForecast(due=3 * STEP, mean=1.0, upper=5.0, start=start, peak=peak))
    assert list(buf.peak_covered) == peak_covered
    assert list(buf.covered) == [True]  # the step at the horizon, under its upper bound


def test_a_window_whose_horizon_is_unobserved_is_not_scored() -> None:
    buf = scored([0.0, 1.0, 1.0, NAN], PendingForecast(3 * STEP, 1.0, 5.0, STEP, 9.0))
    assert not buf.errors and not buf.covered and not buf.peak_covered


def test_the_pending_defaults_carry_no_window() -> None:
    item = PendingForecast(1.0, 2.0, 3.0)
    assert math.isnan(item.start) and math.isnan(item.peak)


def test_the_live_error_keeps_the_newest_scores() -> None:
    n = LIVE_ERROR_WINDOW + 5
    buf = SignalBuffer(n + 1, STEP)
    buf.append(0.0, np.arange(n, dtype=np.float64))
    buf.pending.extend(PendingForecast(k * STEP, 0.0, k - 0.5, 0.0, k) for k in range(n))
    buf.settle()
    assert LIVE_ERROR_WINDOW == 288
    assert len(buf.errors) == len(buf.covered) == len(buf.peak_covered) == LIVE_ERROR_WINDOW
    assert buf.errors[0] == 5.0 and buf.errors[-1] == n - 1
    assert not any(buf.covered) and all(buf.peak_covered)
