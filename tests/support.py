"""Small helpers shared by the tests: a clock tests move by hand, and a bounded wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta


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
