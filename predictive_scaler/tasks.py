"""The process's background tasks and their supervisor: lease renewal, following the
configuration (a polled file or a watched ConfigMap), and waiting for the first one.

Every task is named and guarded: a failure is logged and counted, the loop goes on;
cancellation is re-raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from typing import Any

from predictive_scaler.config_watch import watch_config_map
from predictive_scaler.controller import Controller, Sleeper
from predictive_scaler.dispatch import sleep_or_stop
from predictive_scaler.logs import get_logger
from predictive_scaler.settings import CONFIG_KEY
from predictive_scaler.startup import RunOptions
from predictive_scaler.values import ConfigMapEvent

__all__ = ["Supervisor", "follow_config_map", "poll_config_file", "renew_lease", "wait_first"]

log = get_logger()


class Supervisor:
    """Named, guarded background tasks."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(self._guard(name, coro), name=name))

    @staticmethod
    async def _guard(name: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("task_failed", task=name, error=str(error))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_first(ready: asyncio.Event, stop: asyncio.Event) -> None:
    """Until ``ready`` or ``stop`` is set, whichever comes first."""
    waiters = {asyncio.ensure_future(ready.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


async def renew_lease(controller: Controller, sleeper: Sleeper, stop: asyncio.Event) -> None:
    """One election step every renew period until ``stop``."""
    elector = controller.elector
    assert elector is not None
    while not stop.is_set():
        await sleep_or_stop(sleeper, elector.renew_period_seconds, stop)
        if stop.is_set():
            return
        try:
            await controller.renew_leadership()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # keep electing whatever happens
            log.exception("lease_renewal_failed", error=str(error))


async def poll_config_file(
    controller: Controller, options: RunOptions, sleeper: Sleeper, stop: asyncio.Event
) -> None:
    """Reload ``--config`` whenever its mtime changes, until ``stop``."""
    path = options.config_file
    assert path is not None
    seen = _mtime(path)
    while not stop.is_set():
        await sleep_or_stop(sleeper, options.config_poll_seconds, stop)
        current = _mtime(path)
        if current != seen:
            seen = current
            await controller.load_config_file(path)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


async def follow_config_map(
    controller: Controller,
    ref: tuple[str, str],
    sleeper: Sleeper,
    ready: asyncio.Event,
) -> None:
    """Follow the ConfigMap for good (:mod:`predictive_scaler.config_watch`); ``ready`` is
    set once a configuration was applied."""
    namespace, name = ref
    seen: list[str | None] = []  # the data last taken: a re-list feeds it again

    async def on_event(event: ConfigMapEvent) -> None:
        if event.event_type == "DELETED":
            seen.clear()
            await controller.reject_config(f"ConfigMap {namespace}/{name} does not exist")
            return
        text = event.data.get(CONFIG_KEY)
        if seen == [text] and ready.is_set():
            return
        seen[:] = [text]
        if await controller.load_config_text(text):
            ready.set()

    await watch_config_map(
        controller.kube, namespace, name, on_event, metrics=controller.metrics, sleep=sleeper
    )
