"""Requests in flight: running plus waiting requests summed over the pods, against a per-pod
concurrency target (NIM's and vLLM's ``num_requests_running`` and ``num_requests_waiting``).

Unlike the KV-cache gauge, a request count is not capped per pod: a saturated pod's queue
grows, so the sum is the demand itself, with no correction. The running series carries the
freshness rule and the pod count; where the waiting series has no sample, the running
requests alone stand, a lower bound (it may raise, never lower).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np

from predictive_scaler.signals.kind import FloatArray, KindQuery, SignalSpec

__all__ = ["KIND"]


class InFlightKind:
    name: Final = "in_flight"
    summary: Final = (
        "`runningQuery` plus `queueQuery` (requests running and waiting, summed over the pods) "
        "against a per-pod concurrency `targetPerPod`; where the queue has no sample, the "
        "running requests alone (a lower bound)"
    )
    keys: Final = ("runningQuery", "queueQuery")
    required: Final = ("runningQuery", "queueQuery")
    together: Final = ()
    # Not the preset's hpaMetric: that is the KV-cache gauge, not a request count.
    preset_keys: Final = ("runningQuery", "queueQuery")

    def queries(self, signal: SignalSpec) -> tuple[KindQuery, ...]:
        # The loader requires both for this kind.
        assert signal.running_query is not None and signal.queue_query is not None
        return (
            KindQuery("running", signal.running_query),
            KindQuery("queue", signal.queue_query),
        )

    def compute(
        self, first: FloatArray, others: Mapping[str, FloatArray]
    ) -> tuple[FloatArray, str | None]:
        running = np.asarray(first, dtype=np.float64)
        waiting = np.asarray(others["queue"], dtype=np.float64)
        queued = np.isfinite(waiting)
        demand: FloatArray = running + np.maximum(np.where(queued, waiting, 0.0), 0.0)
        gaps = int((np.isfinite(running) & ~queued).sum())
        if not gaps:
            return demand, None
        return demand, (
            f"demand counts no waiting requests at {gaps} of {running.size} new steps "
            "(no queue sample)"
        )


KIND: Final = InFlightKind()
