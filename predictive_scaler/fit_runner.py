"""Where fits run: off the event loop, in worker processes or a thread, each within a time
budget (the controller's ``fit_runner``, :class:`~predictive_scaler.ports.FitRunner`).

A process pool whose worker died is replaced, and a fit over its budget is abandoned (its
worker stopped), so one bad fit never disables fitting for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final, TypeVar

from predictive_scaler.logs import get_logger
from predictive_scaler.ports import FitRunner

__all__ = [
    "DEFAULT_FIT_TIMEOUT_SECONDS",
    "FIT_NICENESS",
    "FitTimeoutError",
    "ProcessFitRunner",
    "ThreadFitRunner",
    "make_fit_runner",
]

DEFAULT_FIT_TIMEOUT_SECONDS: Final = 300.0
"""Budget of one fit, from submission (a fit of 7 days at 1-minute steps takes seconds; the
budget also covers the wait behind the other fits in flight)."""

FIT_NICENESS: Final = 10
"""How much lower than the controller's the fit workers' CPU priority is (``nice``): a fit
is background work, and the event loop (cycles, the liveness heartbeat) must not wait for
the CPU behind it. Within a container's CPU limit, the controller's own processes share by
this weight."""

_FitT = TypeVar("_FitT")

log = get_logger()


def _lower_priority() -> None:
    """A fit worker's first act: step back behind the controller for the CPU (raising one's
    own niceness needs no privilege)."""
    with contextlib.suppress(OSError):
        os.nice(FIT_NICENESS)


class FitTimeoutError(TimeoutError):
    """A fit ran past its time budget; it was abandoned (and its worker process stopped)."""


class ProcessFitRunner:
    """Fits models in worker processes (the reconcilers' ``fit_runner`` hook).

    Fitting is CPU-bound Python (statsmodels, the ``auto`` walk forward), so threads share
    one core under the GIL; processes use them all. Workers are spawned (no fork of an event
    loop or of open sockets) and receive ``functools.partial(fit_compact, ...)`` with plain
    arguments; the compact fit they send back is a few kB. At most ``2 * workers`` fits are
    in flight, so a cold start does not queue every target's history at once.

    The pool heals itself. A ``ProcessPoolExecutor`` whose worker died (an OOM kill) refuses
    every later job, so a broken pool is replaced by a new one: the fits that were in it fail
    once (the callers hold on bad data for that cycle), the next ones run. A fit that outlives
    ``timeout_seconds`` (counted from submission, so the budget must cover a wait behind
    ``2 * workers - 1`` others) is abandoned with :class:`FitTimeoutError` and the pool's
    workers are killed and replaced: a worker stuck in a fit would otherwise keep its slot
    for good. :meth:`problem` names a fitter that keeps breaking, for ``/healthz``.
    """

    def __init__(
        self,
        workers: int,
        *,
        timeout_seconds: float | None = None,
        max_consecutive_failures: int = 5,
    ) -> None:
        if workers < 1:
            raise ValueError(f"fit workers must be at least 1, got {workers}")
        self.workers = workers
        self.timeout_seconds = timeout_seconds
        self.max_consecutive_failures = max_consecutive_failures
        self.pools_replaced = 0
        """Pools made anew after a worker died or a fit ran over its budget."""
        self._failures = 0
        self._last_failure = ""
        self._generation = 0
        self._pool = self._new_pool()
        self._slots = asyncio.Semaphore(2 * workers)

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing

        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_lower_priority,
        )

    async def __call__(self, fit: Callable[[], _FitT]) -> _FitT:
        loop = asyncio.get_running_loop()
        async with self._slots:
            generation, pool = self._generation, self._pool
            try:
                future = loop.run_in_executor(pool, fit)
            except BrokenProcessPool:
                # Broken before this job went in (a worker died while idle): it never ran.
                self._replace(generation, "a worker process died")
                generation, pool = self._generation, self._pool
                future = loop.run_in_executor(pool, fit)
            try:
                async with asyncio.timeout(self.timeout_seconds) as budget:
                    result = await future
            except TimeoutError as error:
                if not budget.expired():
                    raise  # the fit's own TimeoutError
                _kill_workers(pool)
                self._replace(generation, f"a fit ran over its {self.timeout_seconds:g}s budget")
                raise FitTimeoutError(
                    f"fit ran over its budget of {self.timeout_seconds:g}s; worker stopped"
                ) from error
            except BrokenProcessPool:
                self._replace(generation, "a worker process died")
                raise
            except Exception:
                self._failures = 0  # the fit itself failed: the pool works
                raise
            self._failures = 0
            return result

    def _replace(self, generation: int, why: str) -> None:
        """Swap in a new pool, once per broken one (its other callers find it replaced)."""
        if generation != self._generation:
            return
        old = self._pool
        self._pool = self._new_pool()
        self._generation += 1
        self._failures += 1
        self._last_failure = why
        self.pools_replaced += 1
        old.shutdown(wait=False, cancel_futures=True)
        log.warning(
            "fit_pool_replaced", why=why, consecutive=self._failures, total=self.pools_replaced
        )

    def problem(self) -> str | None:
        """Why the fitter is unusable: its pool broke ``max_consecutive_failures`` times
        in a row with no fit completing in between; ``None`` while it works."""
        if self._failures >= self.max_consecutive_failures:
            return (
                f"the fit pool broke {self._failures} times in a row without a fit "
                f"completing (last: {self._last_failure})"
            )
        return None

    def close(self) -> None:
        """Stop the workers at once (fits still running are worthless at shutdown; a hung
        one would block a graceful wait forever). Safe to call twice."""
        _kill_workers(self._pool)
        self._pool.shutdown(wait=True, cancel_futures=True)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor has no public way to stop a running job before Python 3.14's
    # terminate_workers(); its ``_processes`` map (pid -> Process) has been stable since 3.2.
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError):
            process.kill()


class ThreadFitRunner:
    """Fits in a thread of this process (``--fit-workers 0``), within a time budget.

    A thread cannot be stopped: a fit over its budget is abandoned (the cycle holds on bad
    data) and runs on in its thread. Use worker processes where fits may hang.
    """

    def __init__(self, timeout_seconds: float | None = None) -> None:
        self.timeout_seconds = timeout_seconds
        self.workers = 1
        """Counts as one worker: the controller runs at most one fit beside the cycles."""

    async def __call__(self, fit: Callable[[], _FitT]) -> _FitT:
        try:
            async with asyncio.timeout(self.timeout_seconds) as budget:
                return await asyncio.to_thread(fit)
        except TimeoutError as error:
            if not budget.expired():
                raise
            raise FitTimeoutError(
                f"fit ran over its budget of {self.timeout_seconds:g}s; abandoned"
            ) from error


def make_fit_runner(workers: int, timeout_seconds: float) -> FitRunner:
    """``--fit-workers``: that many worker processes, or a thread of this process for 0."""
    if workers > 0:
        return ProcessFitRunner(workers, timeout_seconds=timeout_seconds)
    return ThreadFitRunner(timeout_seconds)
