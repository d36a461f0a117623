"""Demand from raw series: the sum over pods, corrected for saturation. Pure, no I/O.

The controller forecasts aggregate demand in pods' worth of KV cache, never the per-pod
average: the average falls when pods are added, so forecasting it would feed the
controller's own actions back into its input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def compute_pod_sum(per_pod: Sequence[FloatArray]) -> FloatArray:
    """Sum of per-pod gauges at each step; NaN only where no pod reported.

    A pod that is absent at a step (not ready, not yet scraped) contributes nothing, which
    is what the HPA sees too.
    """
    if not per_pod:
        raise ValueError("no pod series to sum")
    stacked = np.vstack([np.asarray(s, dtype=np.float64) for s in per_pod])
    reported = np.isfinite(stacked).any(axis=0)
    total: FloatArray = np.where(reported, np.nansum(stacked, axis=0), np.nan)
    return total


def compute_demand(
    usage_sum: FloatArray,
    waiting: FloatArray | None = None,
    running: FloatArray | None = None,
) -> FloatArray:
    """Demand in pods' worth of KV cache: ``usage * (1 + waiting / max(running, 1))``.

    The cache gauge is capped at 1.0 per pod and a saturated pod queues requests instead,
    so history taken while saturated would teach the model that demand was lower than it
    was. The queued share scales the observed usage back up. Without a queue series, or
    where it is missing, the usage is taken as it is.
    """
    usage = np.asarray(usage_sum, dtype=np.float64)
    if waiting is None:
        return usage.copy()
    queue = np.asarray(waiting, dtype=np.float64)
    if queue.shape != usage.shape:
        raise ValueError(f"queue series has {queue.size} points, usage has {usage.size}")
    if running is None:
        active = np.ones_like(usage)
    else:
        active = np.asarray(running, dtype=np.float64)
        if active.shape != usage.shape:
            raise ValueError(f"running series has {active.size} points, usage has {usage.size}")
    share = np.where(np.isfinite(queue), np.maximum(queue, 0.0), 0.0) / np.maximum(
        np.where(np.isfinite(active), active, 1.0), 1.0
    )
    corrected: FloatArray = usage * (1.0 + share)
    return corrected
