"""Small helpers shared by the tests: a clock tests move by hand, a bounded wait and the
shared traces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path


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
