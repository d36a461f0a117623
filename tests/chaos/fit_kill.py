"""The real process fit pool (``--fit-workers``), and SIGKILLs of its worker processes.

``KillableFits`` is the controller's ``fit_runner``: every fit goes to the real
``ProcessFitRunner`` (spawned worker processes, the pool that heals itself). A kill is a real
``SIGKILL`` of one live worker process (as the OOM killer sends it), either between two
rounds (the worker is idle) or a few milliseconds after a fit was handed to the pool (the
worker is busy, or just finished: both happen in production). Each fit's outcome is recorded
with the soak round it ran in, so the soak can check that fitting never stops: a fit that
fails on a broken pool although no worker was killed since the last fit that completed is a
violation (the fits in flight when a worker dies may fail; the next ones must not).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import signal
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from predictive_scaler.runtime import FitTimeoutError, ProcessFitRunner


@dataclass
class FitOutcomes:
    fits: int = 0
    failed_on_pool: list[tuple[int, str]] = field(default_factory=list)
    """(round, error) of fits that failed because of the pool (not the model)."""
    unexplained: list[tuple[int, str]] = field(default_factory=list)
    """Of those, the ones no kill explains: no worker was killed while the fit was in the
    pool, and the pool it went into was not one a kill had broken (not yet replaced). The
    pool broke by itself, or stayed broken: fitting stopped."""
    kills: int = 0
    kills_during_fit: int = 0


class KillableFits:
    def __init__(self, workers: int, rng: random.Random, *, timeout_seconds: float) -> None:
        self.runner = (
            ProcessFitRunner(workers, timeout_seconds=timeout_seconds) if workers else None
        )
        self.workers = workers
        """As ``ProcessFitRunner.workers`` (the controller sizes its background fits by it)."""
        self.rng = rng
        self.outcomes = FitOutcomes()
        self.round = 0
        self._kill_next_fit = False

    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes (the pool's children: nothing else here
        is a multiprocessing child)."""
        return [p.pid for p in multiprocessing.active_children() if p.pid is not None]

    def kill_idle(self) -> bool:
        """SIGKILL one live worker now; False when none is running yet."""
        pids = self.worker_pids() if self.runner is not None else []
        if not pids:
            return False
        self._kill(self.rng.choice(pids))
        return True

    def kill_during_next_fit(self) -> None:
        self._kill_next_fit = True

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.outcomes.kills += 1

    async def __call__(self, fit: Callable[[], Any]) -> Any:
        self.outcomes.fits += 1
        if self.runner is None:
            return fit()
        kills, replaced = self.outcomes.kills, self.runner.pools_replaced
        job = asyncio.ensure_future(self.runner(fit))
        if self._kill_next_fit and self.runner is not None:
            self._kill_next_fit = False
            await asyncio.sleep(self.rng.uniform(0.0, 0.01))
            pids = self.worker_pids()
            if pids:
                self._kill(self.rng.choice(pids))
                self.outcomes.kills_during_fit += 1
        try:
            result = await job
        except (BrokenProcessPool, FitTimeoutError) as error:
            failure = (self.round, f"{type(error).__name__}: {error}")
            self.outcomes.failed_on_pool.append(failure)
            killed_meanwhile = self.outcomes.kills > kills
            broken_when_submitted = replaced < kills
            if not (killed_meanwhile or broken_when_submitted):
                self.outcomes.unexplained.append(failure)
            raise
        return result

    def problem(self) -> str | None:
        return self.runner.problem() if self.runner is not None else None

    @property
    def pools_replaced(self) -> int:
        return self.runner.pools_replaced if self.runner is not None else 0

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
