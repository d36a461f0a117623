"""Runs the targets' cycles off the work queue: bounded, each within a deadline, no barrier.

The loop had one global pass: every target waited for the slowest, and ``/healthz`` ticked
only between passes, so a hung Prometheus or a long cold start got the pod killed by its own
liveness probe. Here each target is a key of a :class:`~predictive_scaler.workqueue.WorkQueue`
with its own due time, as in the HPA controller and KEDA:

- due keys are taken in *waves* of at most :data:`WAVE_SIZE`, so the batched range queries
  of a wave are made once for all of it (:meth:`Dispatcher.start_due`); at most
  :data:`MAX_WAVES` waves are between their prefetch and the start of their last cycle,
  which bounds the prefetched answers held at once. A wave frees its place once all its
  cycles have *started*; it never waits for them to end;
- at most ``max_concurrency`` cycles run at once; each has ``deadline_seconds`` from its
  start, after which it is cancelled (its HPA keeps what it has: nothing is lowered) and the
  target is due again one interval after its last due time;
- the serving loop (:meth:`Dispatcher.serve`) only starts waves and sleeps; it never awaits a
  cycle, so its heartbeat keeps ticking whatever a cycle waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from predictive_scaler.logs import get_logger
from predictive_scaler.ports import Clock, Sleeper
from predictive_scaler.values import CycleReport
from predictive_scaler.workqueue import WorkQueue

__all__ = [
    "MAX_LOOP_SLEEP_SECONDS",
    "MAX_WAVES",
    "WAVE_SIZE",
    "Dispatcher",
    "TargetKey",
    "sleep_or_stop",
]

TargetKey = tuple[str, str]
WAVE_SIZE: Final = 200
"""Due targets whose range queries are batched and held at once (bounds the memory of a
first cycle, when each answer is a whole history)."""
MAX_WAVES: Final = 2
"""Waves prefetched but not yet fully started."""
MAX_LOOP_SLEEP_SECONDS: Final = 5.0
"""The loop wakes at least this often, so the heartbeat stays fresh and a stop is seen."""
STALL_GRACE_SECONDS: Final = 60.0
"""A cycle still running this long past its deadline did not stop when cancelled."""

RunCycle = Callable[[TargetKey], Awaitable[CycleReport | None]]
Prefetch = Callable[[Sequence[TargetKey], datetime], Awaitable[None]]
IntervalOf = Callable[[TargetKey], float | None]
"""A target's interval in seconds; ``None`` once it is no longer configured."""

log = get_logger()


class Dispatcher:
    """The work queue of target cycles and the tasks that run them."""

    def __init__(
        self,
        run_cycle: RunCycle,
        interval_of: IntervalOf,
        *,
        clock: Clock,
        prefetch: Prefetch | None = None,
        max_concurrency: int = 16,
        deadline_seconds: float = 600.0,
        wave_size: int = WAVE_SIZE,
        max_waves: int = MAX_WAVES,
        on_deadline: Callable[[TargetKey], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1 or wave_size < 1 or max_waves < 1:
            raise ValueError("concurrency, wave size and waves must be at least 1")
        self.run_cycle = run_cycle
        self.interval_of = interval_of
        self.clock = clock
        self.prefetch = prefetch
        self.deadline_seconds = deadline_seconds
        self.wave_size = wave_size
        self.max_waves = max_waves
        self.on_deadline = on_deadline
        self.monotonic = monotonic
        self.queue: WorkQueue[TargetKey] = WorkQueue()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._waves: set[asyncio.Task[None]] = set()
        self._cycles: set[asyncio.Task[CycleReport | None]] = set()
        self._running_since: dict[TargetKey, float] = {}
        self.deadlines_exceeded = 0

    # ------------------------------------------------------------------ the queue

    def schedule(self, key: TargetKey, due: datetime) -> None:
        self.queue.add(key, due)

    def discard(self, key: TargetKey) -> None:
        self.queue.discard(key)

    def seconds_until_due(self) -> float:
        """How long the loop may sleep: until the next due key, at most the loop's cap."""
        due = self.queue.next_due()
        if due is None or len(self._waves) >= self.max_waves:
            return MAX_LOOP_SLEEP_SECONDS  # woken early when a wave frees its place
        wait = (due - self.clock()).total_seconds()
        return min(max(wait, 0.0), MAX_LOOP_SLEEP_SECONDS)

    # ------------------------------------------------------------------ running

    def start_due(self) -> list[_Wave]:
        """Start waves of the keys due now while there is room."""
        started: list[_Wave] = []
        while len(self._waves) < self.max_waves:
            now = self.clock()
            popped = self.queue.pop_due(now, self.wave_size)
            if not popped:
                break
            started.append(self._start_wave(popped, now))
        return started

    def _start_wave(self, popped: Sequence[tuple[TargetKey, datetime]], now: datetime) -> _Wave:
        cycles: list[asyncio.Task[CycleReport | None]] = []
        wave = asyncio.create_task(self._wave(popped, now, cycles), name=f"wave:{len(popped)}")
        self._waves.add(wave)
        wave.add_done_callback(self._waves.discard)
        return _Wave(wave, cycles)

    async def _wave(
        self,
        popped: Sequence[tuple[TargetKey, datetime]],
        now: datetime,
        cycles: list[asyncio.Task[CycleReport | None]],
    ) -> None:
        all_started = asyncio.Event()
        if self.prefetch is not None and len(popped) > 1:
            try:
                await self.prefetch([key for key, _ in popped], now)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # each target then queries alone
                log.exception("prefetch_failed", targets=len(popped), error=str(error))
        waiting = len(popped)

        def one_started() -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0:
                all_started.set()

        for key, due in popped:
            task = asyncio.create_task(
                self._cycle(key, due, one_started), name=f"cycle:{key[0]}/{key[1]}"
            )
            self._cycles.add(task)
            task.add_done_callback(self._cycles.discard)
            cycles.append(task)
        # The wave's place is free once its last cycle holds its answers, not when it ends.
        await all_started.wait()

    async def _cycle(
        self, key: TargetKey, due: datetime, on_started: Callable[[], None]
    ) -> CycleReport | None:
        report: CycleReport | None = None
        try:
            async with self._semaphore:
                on_started()
                self._running_since[key] = self.monotonic()
                try:
                    async with asyncio.timeout(self.deadline_seconds) as budget:
                        report = await self.run_cycle(key)
                except TimeoutError:
                    if not budget.expired():
                        raise
                    self.deadlines_exceeded += 1
                    log.error(
                        "cycle_deadline_exceeded",
                        target=f"{key[0]}/{key[1]}",
                        deadline_seconds=self.deadline_seconds,
                    )
                    if self.on_deadline is not None:
                        self.on_deadline(key)
                finally:
                    self._running_since.pop(key, None)
        finally:
            interval = self.interval_of(key)
            later = None
            if interval is not None:
                later = max(due + timedelta(seconds=interval), self.clock())
            self.queue.done(key, later)
        return report

    async def run_due(self, *, force: bool = False) -> list[CycleReport]:
        """Run every key due now (every queued one with ``force``) to the end of its cycle,
        in the same waves as :meth:`serve`: the step the tests and benchmarks drive. Keys
        that come due again meanwhile wait for the next call."""
        now = self.clock()
        if force:
            for key in self.queue:
                self.queue.add(key, now)
        popped = self.queue.pop_due(now)
        mine: list[_Wave] = []
        for first in range(0, len(popped), self.wave_size):
            while len(self._waves) >= self.max_waves:
                await asyncio.wait(set(self._waves), return_when=asyncio.FIRST_COMPLETED)
            mine.append(self._start_wave(popped[first : first + self.wave_size], now))
        await asyncio.gather(*(wave.task for wave in mine))
        results = await asyncio.gather(*(cycle for wave in mine for cycle in wave.cycles))
        return [report for report in results if report is not None]

    async def serve(
        self,
        stop: asyncio.Event,
        sleeper: Sleeper,
        tick: Callable[[], None],
        between: Callable[[], None] | None = None,
    ) -> None:
        """Start due waves and sleep until the next is due, until ``stop``. ``tick`` is the
        heartbeat, called on every wake (at least every :data:`MAX_LOOP_SLEEP_SECONDS`);
        ``between`` runs on every wake too (it must not block)."""
        while not stop.is_set():
            tick()
            self.start_due()
            if between is not None:
                between()
            await sleep_or_stop(sleeper, self.seconds_until_due(), stop, wake=set(self._waves))
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the waves and cycles still running (at shutdown)."""
        pending = [*self._waves, *self._cycles]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def problem(self) -> str | None:
        """Why the loop is stuck, for ``/healthz``: a cycle that outlived its deadline by
        :data:`STALL_GRACE_SECONDS` ignored its cancellation (a blocking call), and a restart
        is the only way out. Slow cycles within their deadline are not a liveness problem."""
        if not self._running_since:
            return None
        key, since = min(self._running_since.items(), key=lambda item: item[1])
        age = self.monotonic() - since
        if age > self.deadline_seconds + STALL_GRACE_SECONDS:
            return (
                f"the cycle of {key[0]}/{key[1]} has run {age:.0f}s, past its deadline of "
                f"{self.deadline_seconds:g}s"
            )
        return None

    def busy(self) -> bool:
        """A wave is prefetching or a cycle is running."""
        return bool(self._waves or self._cycles)


@dataclass(frozen=True)
class _Wave:
    task: asyncio.Task[None]
    """Prefetch, then start every cycle; done once the last has started."""
    cycles: list[asyncio.Task[CycleReport | None]]


async def sleep_or_stop(
    sleeper: Sleeper,
    seconds: float,
    stop: asyncio.Event,
    *,
    wake: Set[asyncio.Task[None]] = frozenset(),
) -> None:
    """Sleep with the injected sleeper; wake early on ``stop`` or when a task of ``wake``
    ends (for the loop: a wave freed its place)."""
    if stop.is_set():
        return
    sleeping = asyncio.ensure_future(sleeper(seconds))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeping, stopping, *wake}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (sleeping, stopping):
            if not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future
