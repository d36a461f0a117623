"""Small helpers shared by the tests: a clock tests move by hand, a bounded wait and the
shared traces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol


class FakeClock:
    """A clock that stands still until a test advances it (timezone-aware)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def eventually(predicate: Callable[[], bool], within_seconds: float = 30.0) -> None:
    """Poll a condition the controller's own tasks will make true (its loop runs on fake
    time, so there is no event to wait on); fail after ``within_seconds`` of real time."""
    async with asyncio.timeout(within_seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
"""The workplace's traces, in ``shared/`` beside the checkout (as CI lays it, and as
``/work/main`` and each worktree under ``/work/wt`` see it): never an absolute path."""


def shared_trace(name: str) -> Path:
    """A shared trace by file name; raises when ``shared/`` beside the checkout lacks it."""
    path = SHARED_TRACES / name
    if not path.is_file():
        raise FileNotFoundError(f"shared trace {name} not in {SHARED_TRACES}")
    return path


DEFAULTS_YAML = """\
defaults:
  interval: 5m
  step: 5m
  history: 1d
  minHistory: 1h
  warmup: 10m
  model: persistence
  seasons: []
  refitInterval: 1h
  scaleDownDelay: 10m
  missingDataHold: 30m
  staleAfter: 15m
"""
"""The ``defaults:`` block the loop's tests share: 5-minute steps, a day of history, the
persistence model (fast, exact), a 10-minute warm-up and delay. A test appends its
``targets:`` (see :func:`config_yaml`) instead of copying this block."""


def config_yaml(targets: str) -> str:
    """A configuration of :data:`DEFAULTS_YAML` and ``targets`` (the ``targets:`` block)."""
    return DEFAULTS_YAML + targets


class Busy(Protocol):
    def busy(self) -> bool: ...


class QuiescentSleeper:
    """The fake ``sleeper`` of a whole ``run_controller``: fake time moves only while no
    target cycle is running.

    The process runs its cycles beside its other tasks (lease, config watch, informer), and
    each of them sleeps through this. Were every sleep to move the shared clock at once,
    those tasks would age the data by minutes of fake time while one cycle's fit takes a
    real second, and a forecast could go stale between two reads of a test. Holding the
    clock until the cycles are done makes a cycle take no fake time, whatever the machine's
    load. Give it the controller's dispatcher (``on_started``) to watch.
    """

    def __init__(self, clock: FakeClock, pause_seconds: float = 0.002) -> None:
        self.clock = clock
        self.pause_seconds = pause_seconds
        self.watched: list[Busy] = []
        self.frozen = False
        """Set by a test that reads several things that must agree: time stops."""

    def watch(self, dispatcher: Busy) -> None:
        self.watched.append(dispatcher)

    async def __call__(self, seconds: float) -> None:
        while any(d.busy() for d in self.watched):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        if self.frozen:
            await asyncio.sleep(0.01)
            return
        self.clock.advance(seconds)
        await asyncio.sleep(self.pause_seconds)  # let the other tasks run

    def collect(self, started: list[Any]) -> Callable[[Any], None]:
        """An ``on_started`` that appends the controller to ``started`` and watches it."""

        def on_started(controller: Any) -> None:
            started.append(controller)
            self.watch(controller.dispatcher)

        return on_started
