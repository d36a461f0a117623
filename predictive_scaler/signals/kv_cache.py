"""KV-cache usage summed over the pods, corrected upward for saturation (the default kind).

The cache gauge is capped at 1.0 per pod and a saturated pod queues requests instead; with
``queueQuery`` and ``runningQuery`` set the usage is scaled by ``1 + waiting / max(running,
1)`` where both have a sample (:func:`predictive_scaler.demand.compute_demand`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from predictive_scaler.demand import compute_demand, compute_uncorrected
from predictive_scaler.signals.kind import FloatArray, KindQuery, SignalSpec

__all__ = ["KIND"]


class KvCacheKind:
    name: Final = "kv_cache"
    summary: Final = (
        "`query` (KV-cache usage summed over the pods), times `1 + waiting / max(running, 1)` "
        "where `queueQuery` and `runningQuery` both have a sample"
    )
    keys: Final = ("query", "queueQuery", "runningQuery")
    required: Final = ("query",)
    together: Final = (("queueQuery", "runningQuery"),)
    preset_keys: Final = ("query", "queueQuery", "runningQuery", "hpaMetric")

    def queries(self, signal: SignalSpec) -> tuple[KindQuery, ...]:
        assert signal.query is not None  # the loader requires it for this kind
        usage = KindQuery("usage", signal.query)
        if signal.queue_query is None or signal.running_query is None:
            return (usage,)
        return (
            usage,
            KindQuery("queue", signal.queue_query),
            KindQuery("running", signal.running_query),
        )

    def compute(
        self, first: FloatArray, others: Mapping[str, FloatArray]
    ) -> tuple[FloatArray, str | None]:
        if not others:
            return compute_demand(first), None
        waiting, running = others["queue"], others["running"]
        gaps = int(compute_uncorrected(first, waiting, running).sum())
        partial = (
            # Usage alone is a lower bound of demand: it may raise, never lower.
            f"demand not corrected for saturation at {gaps} of {first.size} new steps "
            "(no queue or running sample)"
            if gaps
            else None
        )
        return compute_demand(first, waiting, running), partial


KIND: Final = KvCacheKind()
