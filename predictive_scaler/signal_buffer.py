"""One signal's demand history as a ring, with its forecasts waiting to come due and their
live error.

PURE: numpy arithmetic on epoch seconds, no I/O, no event loop, no logger. The reconciler
appends what each cycle fetched, reads the ordered history out to fit, and records each
forecast it published; :meth:`SignalBuffer.settle` scores those against what happened once
their time has come.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "LIVE_ERROR_WINDOW",
    "PendingForecast",
    "SignalBuffer",
]

FloatArray = npt.NDArray[np.float64]

LIVE_ERROR_WINDOW: Final = 288
"""Forecasts that came due kept for the rolling live error and coverage."""


@dataclass
class PendingForecast:
    """A published forecast waiting for its time to come (epoch seconds)."""

    due: float
    mean: float
    upper: float
    start: float = math.nan
    """First step of the window (the one after the newest point seen)."""
    peak: float = math.nan
    """The window-peak bound the decision took."""


@dataclass
class SignalBuffer:
    """One signal's demand points on a regular grid of ``step`` seconds.

    The buffer is a ring of ``capacity`` points allocated once: a steady cycle writes its
    new point in place, so nothing the size of the history is allocated per cycle; the
    ordered history is copied out only to fit (:meth:`window`).
    """

    capacity: int
    step: float
    start: float | None = None
    """Epoch seconds of the oldest buffered point."""
    _ring: FloatArray = field(default_factory=lambda: np.empty(0), repr=False)
    _head: int = 0
    """Ring index of the oldest point."""
    size: int = 0
    """Points in the buffer."""
    pending: deque[PendingForecast] = field(default_factory=deque)
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=LIVE_ERROR_WINDOW))
    covered: deque[bool] = field(default_factory=lambda: deque(maxlen=LIVE_ERROR_WINDOW))
    peak_covered: deque[bool] = field(default_factory=lambda: deque(maxlen=LIVE_ERROR_WINDOW))
    newest_sample: float | None = None
    """Epoch seconds of the newest sample seen, by its own timestamp (None when the query's
    shape does not allow asking; freshness is then judged on the grid)."""
    _oldest_finite: float | None = None

    @property
    def values(self) -> FloatArray:
        """All buffered points, oldest first (a copy)."""
        return self.window(self.size)

    def window(self, points: int) -> FloatArray:
        """The newest ``points`` points (at most all), oldest first, as a new array."""
        n = min(max(points, 0), self.size)
        first = (self._head + self.size - n) % max(self.capacity, 1)
        if first + n <= self._ring.size:
            return self._ring[first : first + n].copy()
        return np.concatenate([self._ring[first:], self._ring[: first + n - self._ring.size]])

    @property
    def last(self) -> float | None:
        """Epoch seconds of the newest point."""
        if self.start is None or not self.size:
            return None
        return self.start + (self.size - 1) * self.step

    def reset(self) -> None:
        """Forget the buffered points (keeps the allocation)."""
        self.start, self._head, self.size = None, 0, 0
        self._oldest_finite = None
        self.newest_sample = None

    def append(self, start: float, new: FloatArray) -> None:
        """Append points that follow the buffer (the first at ``start`` when it is empty);
        keep the newest ``capacity``."""
        arr = np.asarray(new, dtype=np.float64)
        cap, step = self.capacity, self.step
        if self._ring.size != cap:
            self._ring = np.empty(cap)
        if self.start is None or not self.size:
            self.start, self._head, self.size = start, 0, 0
        if arr.size >= cap:
            self.start += (self.size + arr.size - cap) * step
            self._ring[:] = arr[arr.size - cap :]
            self._head, self.size = 0, cap
            return
        at = (self._head + self.size) % cap
        first = min(arr.size, cap - at)
        self._ring[at : at + first] = arr[:first]
        self._ring[: arr.size - first] = arr[first:]
        self.size += arr.size
        overflow = self.size - cap
        if overflow > 0:
            self._head = (self._head + overflow) % cap
            self.size = cap
            self.start += overflow * step

    def prepend(self, start: float, older: FloatArray) -> int:
        """Put points that end one step before the oldest buffered one in front of the
        buffer (the older part of a staged first fetch), as many of the newest of them as
        there is room for; returns how many were taken. Points that do not end exactly
        there are refused (0): the buffer moved on since they were asked for."""
        arr = np.asarray(older, dtype=np.float64)
        if self.start is None or not self.size or not arr.size:
            return 0
        if not math.isclose(start + arr.size * self.step, self.start, abs_tol=1e-6):
            return 0
        room = self.capacity - self.size
        taken = arr[arr.size - room :] if arr.size > room else arr
        if not taken.size:
            return 0
        merged = np.concatenate([taken, self.values])
        self._ring[: merged.size] = merged
        self._head, self.size = 0, merged.size
        self.start -= taken.size * self.step
        self._oldest_finite = None  # the oldest observed point may now be earlier
        return int(taken.size)

    def _at(self, index: int) -> float:
        return float(self._ring[(self._head + index) % self.capacity])

    def value_at(self, when: float) -> float:
        """The point at epoch seconds ``when`` (the nearest grid step); NaN outside the buffer."""
        if self.start is None:
            return math.nan
        index = round((when - self.start) / self.step)
        if 0 <= index < self.size:
            return self._at(index)
        return math.nan

    def settle(self) -> None:
        """Score past forecasts whose time has come against what happened."""
        last = self.last
        while self.pending and last is not None and self.pending[0].due <= last:
            item = self.pending.popleft()
            actual = self.value_at(item.due)
            if math.isfinite(actual):
                self.errors.append(abs(actual - item.mean))
                self.covered.append(actual <= item.upper + 1e-12)
            # The window's realised peak against the bound the decision took on it; only a
            # window with every step observed is scored.
            if math.isfinite(item.peak) and math.isfinite(item.start):
                steps = round((item.due - item.start) / self.step) + 1
                seen = [self.value_at(item.start + k * self.step) for k in range(steps)]
                if seen and all(math.isfinite(v) for v in seen):
                    self.peak_covered.append(max(seen) <= item.peak + 1e-12)

    def observed_seconds(self) -> float:
        """From the oldest observed (finite) point to the newest point: how much history the
        model really has. The oldest one is cached until the ring drops it."""
        if self.start is None or not self.size:
            return 0.0
        oldest = self._oldest_finite
        if oldest is None or oldest < self.start:
            finite = np.flatnonzero(np.isfinite(self.values))
            oldest = self.start + float(finite[0]) * self.step if finite.size else None
            self._oldest_finite = oldest
        last = self.last
        return 0.0 if oldest is None or last is None else last - oldest + self.step

    def newest_finite(self) -> float | None:
        """Epoch seconds of the newest observed (finite) point."""
        if self.start is None or not self.size:
            return None
        if math.isfinite(self._at(self.size - 1)):  # the usual case: no scan of the history
            return self.start + (self.size - 1) * self.step
        finite = np.flatnonzero(np.isfinite(self.values))
        if not finite.size:
            return None
        return self.start + float(finite[-1]) * self.step

    def fetch_window(self, now_seconds: float) -> tuple[float, float]:
        """Epoch seconds of the first and last point the next fetch asks for: the whole
        history at first, then only what follows the newest point (``start > end``: nothing
        new)."""
        step = self.step
        end = math.floor(now_seconds / step) * step
        oldest = end - (self.capacity - 1) * step
        last = self.last
        start = oldest if last is None else max(last + step, oldest)
        return start, end
