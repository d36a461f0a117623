"""The older part of a signal's history, read beside the cycles after a short first fetch.

With a progressive start a signal's first fetch reads only its newest
:data:`FIRST_FETCH_SECONDS` (or ``minHistory``, if longer): enough for the stand-in's daily
season and its calibration. At a thousand targets the whole seven days was most of a cold
start (the answers' JSON alone is hundreds of MB, and Prometheus' evaluation of them), and
first decisions waited on it. The rest of the history is then read beside the cycles, a
bounded number of signals at a time, put in front of the buffer, and only then is the
configured model fitted: on the whole history, as without the staging.

This module holds the bookkeeping; :class:`~predictive_scaler.signal_read.SignalReader`
does the reading and the merging at the start of a cycle (the buffer is only ever changed
within its signal's cycle, never by the task).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from predictive_scaler.demand_query import DemandRead
from predictive_scaler.logs import Logger
from predictive_scaler.signal_buffer import SignalBuffer

__all__ = ["FIRST_FETCH_SECONDS", "Backfill", "absorb", "first_fetch_start", "next_window"]

FloatArray = npt.NDArray[np.float64]

FIRST_FETCH_SECONDS: Final = 2 * 86_400.0
"""History a staged first fetch reads: the stand-in (``seasonal_naive``) needs a day before
its hold-out, a quarter of what it is given, so two days leave it half a day of day and
night to calibrate on."""


def first_fetch_start(start: float, end: float, step: float, min_history_seconds: float) -> float:
    """The first point a staged first fetch of ``[start, end]`` asks for: the newest
    max(:data:`FIRST_FETCH_SECONDS`, ``minHistory``) of it (all of it when shorter)."""
    span = max(FIRST_FETCH_SECONDS, min_history_seconds)
    return max(start, end - (math.ceil(span / step) - 1) * step)


@dataclass(eq=False)
class Backfill:
    """The part of a signal's history still to read: every point before ``before``."""

    before: float
    """Epoch seconds of the buffer's first point when the staged first fetch landed."""
    task: asyncio.Task[DemandRead] | None = None
    """The read running beside the cycles."""
    start: float = math.nan
    """The first point that read asks for."""

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def take(self) -> DemandRead | BaseException | None:
        """The finished read's result (or why it failed); None while it runs or none ran."""
        task = self.task
        if task is None or not task.done():
            return None
        self.task = None
        if task.cancelled():
            return asyncio.CancelledError("the history read was cancelled")
        error = task.exception()
        if error is not None:
            return error
        return task.result()

    async def wait(self) -> None:
        """Until the running read has finished (tests, benchmarks)."""
        if self.task is not None:
            await asyncio.wait({self.task})  # never raises the read's own error


def next_window(buffer: SignalBuffer, now_seconds: float) -> tuple[float, float] | None:
    """First and last point of the older history still to read: from the oldest point the
    history keeps now to the step before the buffer's first; None when there is none left
    (the history has moved past it)."""
    if buffer.start is None:
        return None
    step = buffer.step
    oldest = (math.floor(now_seconds / step) - (buffer.capacity - 1)) * step
    end = buffer.start - step
    return None if oldest > end else (oldest, end)


def absorb(
    buffer: SignalBuffer,
    start: float,
    outcome: DemandRead | BaseException,
    mask: Callable[[float, FloatArray], FloatArray],
    log: Logger,
    signal: str,
) -> bool:
    """Put a finished read of the points from ``start`` in front of ``buffer``; True when the
    history is now complete, False when the read is to be made again (it failed)."""
    if isinstance(outcome, BaseException):
        log.warning("history_read_failed", signal=signal, error=f"{outcome!r}")
        return False
    if outcome.values is None:
        if outcome.partial is None and (outcome.problem or "").startswith("no data"):
            return True  # nothing older: the history is what the first read had
        if outcome.partial is not None and outcome.partial.startswith("gaps"):
            # Older data does not change: asking again would give the same gaps.
            log.warning("history_read_incomplete", signal=signal, partial=outcome.partial)
            return True
        log.warning("history_read_failed", signal=signal, error=outcome.problem or outcome.partial)
        return False
    taken = buffer.prepend(start, mask(start, outcome.values))
    log.info("history_read", signal=signal, points=taken, total=buffer.size)
    return True
