"""Many targets' range queries answered by few batched ones.

A target's cycle says which of its queries a batched query can answer
(:meth:`~predictive_scaler.signal_read.SignalReader.plan_fetches`: the presets' shapes
only, a sum over one metric name or an ``or`` of several); :func:`prefetch_batched` groups
those of many targets by shape (the names included) and window, asks one ``sum by
(<labels>) (...)`` per chunk, and hands each target its part before its cycle runs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from predictive_scaler.ports import GroupedMetricSource
from predictive_scaler.promql import render_batch_query
from predictive_scaler.ranges import RangeResult, RangeStatus

__all__ = [
    "DEFAULT_BATCH_SAMPLES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SPLIT_QUERIES",
    "FetchPlan",
    "PrefetchTarget",
    "prefetch_batched",
]


class PrefetchTarget(Protocol):
    """What takes a batched answer for one of its cycle's queries (met by
    :class:`~predictive_scaler.signal_read.SignalReader`)."""

    def accept_prefetched(self, plan: FetchPlan, result: RangeResult) -> None: ...


@dataclass(frozen=True, eq=False)
class FetchPlan:
    """One range query of one target's cycle that a batched query can answer."""

    reconciler: PrefetchTarget
    template: str
    metrics: tuple[str, ...]
    """The metric names its query sums over (``promql.batch_shape``), all of them: the
    ``vllm`` preset's ``or`` of two names is another query than either name alone."""
    labels: Mapping[str, str]
    start: float
    end: float
    step: float
    kind: str = "sum"
    """What the batched query computes per target (``promql.batch_shape``)."""


DEFAULT_BATCH_SIZE: Final = 100
"""Most targets per batched query (keeps the regex and the URL short)."""
DEFAULT_SPLIT_QUERIES: Final = 32
"""Most extra queries one prefetch spends asking the halves of failed batches again: enough
to find a few targets whose data fails a batch of 100 (about 2 log2(100) each), few enough
that a server refusing every query gets only a bounded burst more of quick requests."""
DEFAULT_BATCH_SAMPLES: Final = 200_000
"""Most samples per batched answer: the JSON of a first fetch (7 days at 1 m is 10,080
points per target) is parsed into Python objects, about 150 bytes a sample, so this keeps a
batch near 30 MB instead of hundreds."""


async def prefetch_batched(
    plans: Sequence[FetchPlan],
    source: GroupedMetricSource,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int = DEFAULT_BATCH_SAMPLES,
    concurrency: int = 2,
    split_queries: int = DEFAULT_SPLIT_QUERIES,
) -> int:
    """Answer many targets' range queries with few batched ones, and hand each target its
    part (:meth:`PrefetchTarget.accept_prefetched`); returns the number of queries made.

    Plans are grouped by (metric names, kind, label names, start, end, step): targets that
    share the query shape and the window. Each group becomes ``sum by (<labels>)
    (metric{l=~"a|b"})`` (over an ``or`` of the names when there are several)
    in chunks of at most ``batch_size`` targets and ``max_samples`` samples; the answer for a
    target is the group of its label values, judged exactly as its own query's answer would
    be. A batch the server refused (an HTTP error, an unusable answer) is asked again in
    halves, down to single targets, so a failure that one target's data causes (a query
    past the server's sample or time limit, a target's series it cannot serve) costs only
    that target; at most ``split_queries`` such queries per call. A batch that failed
    otherwise (unreachable, no answer in time: the server's, not a target's) or is left
    over is an ERROR for each of its targets, as their own queries would have been.
    Targets whose queries have another shape keep their own queries (nothing is prefetched
    for them).
    """
    groups: dict[tuple[object, ...], list[FetchPlan]] = {}
    for plan in plans:
        key = (plan.metrics, plan.kind, tuple(plan.labels), plan.start, plan.end, plan.step)
        groups.setdefault(key, []).append(plan)
    chunks = []
    for members in groups.values():
        first = members[0]
        points = math.floor((first.end - first.start) / first.step + 1e-9) + 1
        size = max(1, min(batch_size, max_samples // points))
        chunks += [members[i : i + size] for i in range(0, len(members), size)]
    limit = asyncio.Semaphore(max(1, concurrency))
    made = len(chunks)
    splits_left = max(0, split_queries)

    async def run(chunk: list[FetchPlan]) -> None:
        nonlocal made, splits_left
        first = chunk[0]
        query, names = render_batch_query(first.metrics, [p.labels for p in chunk], kind=first.kind)
        async with limit:
            answer = await source.fetch_range_grouped(
                query,
                names,
                datetime.fromtimestamp(first.start, UTC),
                datetime.fromtimestamp(first.end, UTC),
                first.step,
            )
        refused = (
            isinstance(answer, RangeResult)
            and answer.status is RangeStatus.ERROR
            and not answer.unreachable
        )
        if refused and len(chunk) > 1 and splits_left >= 2:
            splits_left -= 2
            made += 2
            half = len(chunk) // 2
            await asyncio.gather(run(chunk[:half]), run(chunk[half:]))
            return
        for plan in chunk:
            if isinstance(answer, RangeResult):
                result = answer
            else:
                result = answer.get(tuple(plan.labels[name] for name in names))
            plan.reconciler.accept_prefetched(plan, result)

    await asyncio.gather(*(run(chunk) for chunk in chunks))
    return made
