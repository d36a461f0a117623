"""The controller's annotations on an HPA: their names, which are state and which are only
informational, and when a difference between the stored and the new ones is worth a write.

Pure: no I/O, no clock, no logging. The reconciler passes what the HPA carries, what it would
write now and ``now``, and writes only when this module says the difference matters.

Two kinds of annotation:

- **State** (:data:`STATE_ANNOTATIONS`): what a restarted controller needs to continue where
  the old one stopped (the user's base, the minReplicas we applied, the decision's clocks).
  A change is written at once.
- **Clocks** (:data:`ANNOTATION_STATE`): the decision's clocks (when data went bad, when good
  data started, the recent needs the scale-down delay takes its maximum over) as one compact,
  versioned JSON value. Written when a restarted controller would otherwise act *sooner*
  than this one (at once: a hold starting or ending, a higher need), or *later* by more than
  a share of the delay (:data:`CLOCK_TOLERANCE_SHARE`); never merely because time passed.
- **Informational** (:data:`INFO_ANNOTATIONS`): the reason, the model, the last forecast and the
  time of the write, for ``kubectl`` and ``predictive-scaler status``. They ride along on every
  state write; on their own they are written only when their codes (the reason's code, the
  model) have differed from the stored ones on every cycle for :data:`INFO_REFRESH_SECONDS`,
  so a reason that flips from cycle to cycle never causes a write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from predictive_scaler.decision import DecisionHistory

__all__ = [
    "ANNOTATION_APPLIED_MIN_REPLICAS",
    "ANNOTATION_BASE_MIN_REPLICAS",
    "ANNOTATION_LAST_FORECAST",
    "ANNOTATION_MODEL",
    "ANNOTATION_PREFIX",
    "ANNOTATION_REASON",
    "ANNOTATION_STATE",
    "ANNOTATION_UPDATED_AT",
    "CLOCK_TOLERANCE_SHARE",
    "INFO_ANNOTATIONS",
    "INFO_REFRESH_SECONDS",
    "MANAGED_ANNOTATIONS",
    "MAX_STORED_PEAKS",
    "STATE_ANNOTATIONS",
    "STATE_VERSION",
    "ClockState",
    "StateError",
    "compute_clock_state",
    "compute_info_codes",
    "decide_clock_write",
    "decide_info_refresh",
    "decode_clock_state",
    "encode_clock_state",
    "later_clocks",
    "restore_history",
    "state_changed",
]

ANNOTATION_PREFIX: Final = "predictive-scaler.io/"
ANNOTATION_BASE_MIN_REPLICAS: Final = ANNOTATION_PREFIX + "base-min-replicas"
ANNOTATION_APPLIED_MIN_REPLICAS: Final = ANNOTATION_PREFIX + "applied-min-replicas"
ANNOTATION_LAST_FORECAST: Final = ANNOTATION_PREFIX + "last-forecast"
ANNOTATION_MODEL: Final = ANNOTATION_PREFIX + "model"
ANNOTATION_REASON: Final = ANNOTATION_PREFIX + "reason"
ANNOTATION_UPDATED_AT: Final = ANNOTATION_PREFIX + "updated-at"
ANNOTATION_STATE: Final = ANNOTATION_PREFIX + "state"

STATE_ANNOTATIONS: Final = (ANNOTATION_BASE_MIN_REPLICAS, ANNOTATION_APPLIED_MIN_REPLICAS)
"""Written whenever they change."""
INFO_ANNOTATIONS: Final = (
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_REASON,
    ANNOTATION_UPDATED_AT,
)
"""Ride along on state writes; alone, written at most once per :data:`INFO_REFRESH_SECONDS`."""
MANAGED_ANNOTATIONS: Final = (*STATE_ANNOTATIONS, ANNOTATION_STATE, *INFO_ANNOTATIONS)
"""Every annotation the controller owns (removed when it gives the base back)."""

INFO_REFRESH_SECONDS: Final = 900.0
"""How long the reason's code or the model must have differed from the stored ones, on every
cycle, before they are written on their own. A flip that comes back within this time is
never written; a lasting change reaches ``status`` within this time (plus a cycle)."""


def state_changed(stored: Mapping[str, str], new: Mapping[str, str | None]) -> bool:
    """Whether any state annotation in ``new`` differs from what the HPA carries."""
    return any(stored.get(key) != new.get(key) for key in STATE_ANNOTATIONS if key in new)


def compute_info_codes(annotations: Mapping[str, str | None]) -> tuple[str | None, str | None]:
    """The part of the informational annotations whose change is worth showing: the reason's
    code (its message changes with every forecast) and the model. The forecast's numbers and
    the timestamp change every cycle and are not compared."""
    reason = annotations.get(ANNOTATION_REASON)
    code = reason.split(":", 1)[0].strip() if reason is not None else None
    return code, annotations.get(ANNOTATION_MODEL)


def decide_info_refresh(
    stored: Mapping[str, str],
    new: Mapping[str, str | None],
    stale_since: datetime | None,
    now: datetime,
    refresh_seconds: float = INFO_REFRESH_SECONDS,
) -> tuple[bool, datetime | None]:
    """Whether to write the informational annotations on their own now, and the new
    ``stale_since`` (the first cycle of the current unbroken run of cycles whose codes differed
    from the stored ones; ``None`` while they agree). The caller keeps ``stale_since`` between
    cycles and resets it to ``None`` after any write."""
    if compute_info_codes(stored) == compute_info_codes(new):
        return False, None
    since = stale_since or now
    return (now - since).total_seconds() >= refresh_seconds, since


# ---------------------------------------------------------------------------- the clocks

STATE_VERSION: Final = 1
"""Version of :data:`ANNOTATION_STATE`'s JSON; any other is ignored (started afresh)."""
MAX_STORED_PEAKS: Final = 16
"""Most (need, time) pairs stored: at most about 20 characters each, so the annotation stays
well under 1 kB. More are merged (the higher need, the later time): later, never sooner."""
CLOCK_TOLERANCE_SHARE: Final = 0.5
"""How much later than this process (as a share of the scale-down delay) a controller
restarted from the stored clocks may end a delay before they are written again: a need that
stops is written once it has stayed away this long, so needs that flip back within it never
cause a write, and a restart ends the delay at most this much (plus the downtime) late."""
_TRACKING: Final = math.inf
"""The start of the good-data run blocks every lowering for the delay, like a need of
"everything" recommended then; it is compared as that level."""


class StateError(ValueError):
    """The state annotation cannot be used (not JSON, another version, a wrong field)."""


@dataclass(frozen=True)
class ClockState:
    """The decision's clocks as stored, in whole epoch seconds rounded up (later is the
    conservative side of every one of them).

    ``None`` times mean "from the restarted process's first cycle": a hold that has not
    started, a good-data run that has not (or, on partial data, not yet) started, or a need
    still recommended when the state was written.
    """

    bad_since: int | None = None
    """Start of the current run of missing or bad data (the hold clock)."""
    good_since: int | None = None
    """Start of the current run of good, complete data (the delay counts from it)."""
    peaks: tuple[tuple[int, int | None], ...] = ()
    """(need, last time it or more was recommended), oldest first, needs falling: the
    steps of the maximum the scale-down delay takes over its window."""


def _ceil(moment: datetime) -> int:
    return math.ceil(moment.timestamp())


def compute_clock_state(
    history: DecisionHistory, now: datetime, window_seconds: float
) -> ClockState:
    """What to store for ``history`` (the decision's output at ``now``): the hold clock, the
    good run's start and the steps of the recent needs' maximum, merged down to
    :data:`MAX_STORED_PEAKS`."""
    recent = sorted(
        (t, v) for t, v in history.recommendations if (now - t).total_seconds() < window_seconds
    )
    steps: list[tuple[int, int | None]] = []
    for moment, value in reversed(recent):  # newest first: keep each new maximum
        if steps and value <= steps[-1][0]:
            continue
        steps.append((value, None if moment >= now else _ceil(moment)))
    steps.reverse()
    while len(steps) > MAX_STORED_PEAKS:
        # Merge the two steps closest in time into the higher need at the later time.
        gaps = [_gap(steps[i], steps[i + 1], now) for i in range(len(steps) - 1)]
        i = gaps.index(min(gaps))
        steps[i : i + 2] = [(steps[i][0], steps[i + 1][1])]
    tracking = history.tracking_since
    good = None if tracking is None or history.partial else _ceil(tracking)
    bad = None if history.bad_since is None else _ceil(history.bad_since)
    return ClockState(bad_since=bad, good_since=good, peaks=tuple(steps))


def _gap(older: tuple[int, int | None], newer: tuple[int, int | None], now: datetime) -> float:
    last = now.timestamp()
    return (newer[1] if newer[1] is not None else last) - (
        older[1] if older[1] is not None else last
    )


def encode_clock_state(state: ClockState) -> str:
    """The annotation's value: compact JSON, ``{"v":1,"bad":..,"good":..,"max":[[need,t]..]}``."""
    return json.dumps(
        {
            "v": STATE_VERSION,
            "bad": state.bad_since,
            "good": state.good_since,
            "max": [list(p) for p in state.peaks],
        },
        separators=(",", ":"),
    )


def _time(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateError(f"{field} must be epoch seconds or null, got {value!r}")
    return value


def decode_clock_state(text: str) -> ClockState:
    """Parse the annotation; :class:`StateError` for anything but this version's format."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise StateError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise StateError("not a JSON object")
    if data.get("v") != STATE_VERSION:
        raise StateError(f"version {data.get('v')!r}, this controller reads {STATE_VERSION}")
    raw_peaks = data.get("max", [])
    if not isinstance(raw_peaks, list) or len(raw_peaks) > 4 * MAX_STORED_PEAKS:
        raise StateError("max must be a short list of [need, time] pairs")
    peaks: list[tuple[int, int | None]] = []
    for pair in raw_peaks:
        if not isinstance(pair, list) or len(pair) != 2:
            raise StateError(f"max entry {pair!r} is not a [need, time] pair")
        need = pair[0]
        if isinstance(need, bool) or not isinstance(need, int) or need < 0:
            raise StateError(f"max entry {pair!r}: need must be a count")
        peaks.append((need, _time(pair[1], "max time")))
    return ClockState(
        bad_since=_time(data.get("bad"), "bad"),
        good_since=_time(data.get("good"), "good"),
        peaks=tuple(peaks),
    )


def restore_history(state: ClockState, now: datetime) -> DecisionHistory:
    """The decision history a new process starts from. Times in the future (another
    controller's clock ahead of ours) are clamped to ``now``; a ``None`` time is ``now``
    (the new process's first cycle), so a clock can only end later than stored, never
    sooner."""
    first = now.timestamp()

    def moment(value: int | None) -> datetime:
        return datetime.fromtimestamp(first if value is None else min(value, first), UTC)

    return DecisionHistory(
        recommendations=tuple(sorted((moment(t), need) for need, t in state.peaks)),
        tracking_since=None if state.good_since is None else moment(state.good_since),
        bad_since=None if state.bad_since is None else moment(state.bad_since),
    )


def later_clocks(stored: DecisionHistory, own: DecisionHistory) -> DecisionHistory:
    """The clocks a follower that now leads continues: of the stored ones (what the old
    leader acted on) and its own (what it saw itself while it followed), each clock the one
    that ends its hold or delay later, so neither view ends one sooner. ``None`` (not
    started: the next bad or good cycle starts it) is the latest of all; the recent needs
    are both views' together. The stored hold clock alone may be stale (the run it counts
    ended while no leader wrote), and the own one alone may be older than the leader's."""

    def later(a: datetime | None, b: datetime | None) -> datetime | None:
        return None if a is None or b is None else max(a, b)

    return DecisionHistory(
        recommendations=tuple(sorted({*stored.recommendations, *own.recommendations})),
        tracking_since=later(stored.tracking_since, own.tracking_since),
        bad_since=later(stored.bad_since, own.bad_since),
        partial=stored.partial or own.partial,
    )


def _levels(state: ClockState, now: float) -> list[tuple[float, float]]:
    """(level, last time it or more was asked for) as a process restored at ``now`` sees it."""
    levels = [(float(need), float(now if t is None else min(t, now))) for need, t in state.peaks]
    good = state.good_since
    return [*levels, (_TRACKING, now if good is None else float(min(good, now)))]


def _true_levels(history: DecisionHistory, now: datetime) -> list[tuple[float, float]]:
    last = now.timestamp()
    levels = [(float(v), t.timestamp()) for t, v in history.recommendations]
    tracking = history.tracking_since
    return [*levels, (_TRACKING, last if tracking is None else tracking.timestamp())]


def _blocked_until(levels: Sequence[tuple[float, float]], level: float, window: float) -> float:
    """When lowering below ``level`` is no longer blocked by these needs (-inf: never was)."""
    times = [t for value, t in levels if value >= level]
    return max(times) + window if times else -math.inf


def _lateness(
    stored: ClockState, history: DecisionHistory, now: datetime, window: float
) -> tuple[float, float]:
    """(soonest, latest): how much sooner and later than ``history`` a process restored from
    ``stored`` now would allow each lowering, in seconds (soonest < 0: it would lower early)."""
    last = now.timestamp()
    mine = _levels(stored, last)
    truth = _true_levels(history, now)
    soonest, latest = 0.0, 0.0
    for level in {value for value, _ in (*mine, *truth)}:
        ours = max(_blocked_until(mine, level, window), last)
        real = max(_blocked_until(truth, level, window), last)
        soonest, latest = min(soonest, ours - real), max(latest, ours - real)
    return soonest, latest


def decide_clock_write(
    stored: ClockState | None,
    history: DecisionHistory,
    now: datetime,
    window_seconds: float,
    tolerance_share: float = CLOCK_TOLERANCE_SHARE,
) -> bool:
    """Whether the state annotation must be written with ``history`` (the decision's output
    at ``now``), given what the HPA carries (``None``: nothing usable).

    Written when a process restarted from ``stored`` would act differently in a way that
    matters: a hold that started or ended (its clock differs); a lowering it would allow
    sooner than this process (a new, higher need); or one it would hold back later by more
    than ``tolerance_share`` of the delay than what can be stored now would (a need that
    stopped, a good run that started). Time passing alone changes none of these."""
    stored = stored or ClockState()
    best = compute_clock_state(history, now, window_seconds)
    if stored.bad_since != best.bad_since:
        return True
    soonest, latest = _lateness(stored, history, now, window_seconds)
    if soonest < 0:
        return True
    _, floor = _lateness(best, history, now, window_seconds)
    return latest - floor > tolerance_share * window_seconds
