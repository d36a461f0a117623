"""The per-target work queue of the control loop: keys by due time, never handed out twice.

Shaped like client-go's workqueue as the HPA controller and KEDA use it, with a due time per
key instead of a rate limiter:

- a key is queued at most once (adding it again keeps the earlier due time);
- a key handed out by :meth:`WorkQueue.pop_due` is *in flight* until :meth:`WorkQueue.done`;
  adding it meanwhile does not hand it out a second time but queues it for when it is done,
  so one target's cycles never overlap;
- :meth:`WorkQueue.discard` forgets a key (a removed target); a discarded key in flight is
  not queued again by its ``done``.

Pure: no clock, no asyncio. The loop passes the times in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator
from datetime import datetime
from typing import Generic, TypeVar

__all__ = ["WorkQueue"]

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys waiting for their due time, and the keys being worked on."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, K]] = []
        self._due: dict[K, datetime] = {}
        """The live due time of each queued key; heap entries that disagree are stale."""
        self._active: set[K] = set()
        """Keys in flight."""
        self._again: dict[K, datetime] = {}
        """Keys added while in flight: queued at this time once done."""
        self._known: set[K] = set()
        self._seq = itertools.count()

    def add(self, key: K, due: datetime) -> None:
        """Queue ``key`` for ``due``; an earlier due time already queued wins."""
        self._known.add(key)
        if key in self._active:
            again = self._again.get(key)
            self._again[key] = due if again is None else min(again, due)
            return
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._compact()

    def discard(self, key: K) -> None:
        """Forget ``key``: not handed out again, not requeued by a ``done`` in flight."""
        self._known.discard(key)
        self._due.pop(key, None)
        self._again.pop(key, None)

    def pop_due(self, now: datetime, limit: int | None = None) -> list[tuple[K, datetime]]:
        """Hand out up to ``limit`` keys due at ``now``, earliest first, each with the time
        it was due for; they are in flight."""
        out: list[tuple[K, datetime]] = []
        while self._heap and (limit is None or len(out) < limit):
            due, _, key = self._heap[0]
            if self._due.get(key) != due:
                heapq.heappop(self._heap)  # stale: re-added earlier, or discarded
                continue
            if due > now:
                break
            heapq.heappop(self._heap)
            del self._due[key]
            self._active.add(key)
            out.append((key, due))
        return out

    def done(self, key: K, next_due: datetime | None) -> None:
        """``key``'s work ended; queue it for ``next_due`` (or for an earlier re-add)."""
        self._active.discard(key)
        again = self._again.pop(key, None)
        if key not in self._known:
            return
        wanted = [d for d in (next_due, again) if d is not None]
        if wanted:
            self.add(key, min(wanted))

    def next_due(self) -> datetime | None:
        """The earliest due time queued, ``None`` when nothing is."""
        while self._heap:
            due, _, key = self._heap[0]
            if self._due.get(key) == due:
                return due
            heapq.heappop(self._heap)
        return None

    def due_time(self, key: K) -> datetime | None:
        """When ``key`` is queued for (or re-queued for, while in flight)."""
        return self._due.get(key, self._again.get(key))

    def is_active(self, key: K) -> bool:
        return key in self._active

    def queued(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due or key in self._active

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._due))

    def _compact(self) -> None:
        # Re-adds with earlier times leave stale entries; rebuild before they dominate.
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(d, next(self._seq), k) for k, d in self._due.items()]
            heapq.heapify(self._heap)
