"""The state annotation's clocks, as pure functions with an explicit ``now``: what is stored,
how it is read back (missing, garbage and future times only ever end a clock later), its
size, and when it is worth a write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from predictive_scaler.annotations import (
    MAX_STORED_PEAKS,
    ClockState,
    StateError,
    compute_clock_state,
    decide_clock_write,
    decode_clock_state,
    encode_clock_state,
    restore_history,
)
from predictive_scaler.decision import DecisionHistory

NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
WINDOW = 600.0
T = int(NOW.timestamp())


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def history(*recs: tuple[float, int], tracking: float | None = 60, partial: bool = False):  # type: ignore[no-untyped-def]
    return DecisionHistory(
        recommendations=tuple((ago(m), v) for m, v in recs),
        tracking_since=None if tracking is None else ago(tracking),
        partial=partial,
    )


@pytest.mark.parametrize(
    ("hist", "expected"),
    [
        # Steady: one need, still recommended ("null": from the restarted process's start).
        (history((5, 3), (0, 3)), ClockState(None, T - 3600, ((3, None),))),
        # A need that stopped keeps its last time; the lower one still runs.
        (history((6, 4), (3, 4), (0, 2)), ClockState(None, T - 3600, ((4, T - 180), (2, None)))),
        # Only the steps of the maximum: a lower need before a higher one is not needed.
        (history((6, 1), (3, 5), (0, 2)), ClockState(None, T - 3600, ((5, T - 180), (2, None)))),
        # Outside the window: gone.
        (history((11, 9), (0, 2)), ClockState(None, T - 3600, ((2, None),))),
        # Partial data: the good run has not started yet.
        (history((0, 2), tracking=0, partial=True), ClockState(None, None, ((2, None),))),
        # A hold.
        (DecisionHistory(bad_since=ago(20)), ClockState(T - 1200, None, ())),
    ],
)
def test_compute_clock_state(hist: DecisionHistory, expected: ClockState) -> None:
    state = compute_clock_state(hist, NOW, WINDOW)
    assert state == expected
    assert decode_clock_state(encode_clock_state(state)) == state


def test_many_needs_are_merged_later_never_sooner_and_stay_small() -> None:
    # A need falling by one every 10 s over the window: 60 steps of its maximum.
    recs = tuple((ago(m / 6), 41 + m) for m in range(59, -1, -1))
    hist = DecisionHistory(recommendations=tuple(sorted(recs)), tracking_since=ago(60))
    state = compute_clock_state(hist, NOW, WINDOW)
    assert len(state.peaks) == MAX_STORED_PEAKS
    assert len(encode_clock_state(state)) < 1024
    restored = restore_history(state, NOW)
    for level in range(41, 101):
        true_last = max(t for t, v in hist.recommendations if v >= level)
        restored_last = max(t for t, v in restored.recommendations if v >= level)
        assert restored_last >= true_last
    assert not decide_clock_write(state, hist, NOW, WINDOW)  # the best that can be stored


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1]",
        '{"v":2}',
        '{"bad":1}',
        '{"v":1,"bad":"x"}',
        '{"v":1,"bad":true}',
        '{"v":1,"good":-5}',
        '{"v":1,"max":[[1]]}',
        '{"v":1,"max":[["a",1]]}',
        '{"v":1,"max":{}}',
        '{"v":1,"max":' + str([[1, 1]] * 100) + "}",
    ],
)
def test_unusable_state_is_refused(text: str) -> None:
    with pytest.raises(StateError):
        decode_clock_state(text)


def test_restore_clamps_future_times_and_starts_missing_ones_now() -> None:
    state = ClockState(bad_since=T + 3600, good_since=None, peaks=((6, T + 7200), (2, None)))
    restored = restore_history(state, NOW)
    assert restored.bad_since == NOW
    assert restored.tracking_since is None  # the decision starts it at its first cycle
    assert restored.recommendations == ((NOW, 2), (NOW, 6))
    assert restore_history(ClockState(), NOW) == DecisionHistory()


PARTIAL = history((0, 2), tracking=0, partial=True)


@pytest.mark.parametrize(
    ("stored", "hist", "write", "why"),
    [
        (ClockState(None, T - 3600, ((3, None),)), history((0, 3)), False, "steady"),
        (ClockState(None, T - 3600, ((2, None),)), history((0, 3)), True, "a higher need"),
        (ClockState(None, T - 3600, ((3, None),)), history((1, 3), (0, 2)), False, "a flip"),
        (
            ClockState(None, T - 3600, ((3, None),)),
            history((6, 3), (0, 2)),
            True,
            "a need that stopped more than half the delay ago",
        ),
        (
            ClockState(None, T - 3600, ((3, T - 360), (2, None))),
            history((1, 3), (0, 2)),
            True,
            "a need back after its stop was written",
        ),
        (ClockState(None, T - 3600, ((2, None),)), PARTIAL, True, "partial data starting"),
        (ClockState(None, None, ((2, None),)), PARTIAL, False, "partial data going on"),
        (
            ClockState(None, T - 3600, ((2, None),)),
            DecisionHistory(bad_since=NOW),
            True,
            "a hold starting",
        ),
        (
            ClockState(T - 600, None, ()),
            history((0, 2), tracking=0),
            True,
            "a hold ending",
        ),
        (ClockState(T - 600, None, ()), DecisionHistory(bad_since=ago(10)), False, "holding"),
        (None, history((0, 2), tracking=60), True, "nothing stored, an old good run"),
        (None, history((0, 2), tracking=1), False, "nothing stored, a new run"),
    ],
)
def test_decide_clock_write(
    stored: ClockState | None, hist: DecisionHistory, write: bool, why: str
) -> None:
    assert decide_clock_write(stored, hist, NOW, WINDOW) is write, why
