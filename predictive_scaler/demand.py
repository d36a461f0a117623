"""Demand from raw series: the sum over pods, corrected for saturation. Pure, no I/O.

The controller forecasts aggregate demand in pods' worth of KV cache, never the per-pod
average: the average falls when pods are added, so forecasting it would feed the
controller's own actions back into its input.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def compute_demand(
    usage_sum: FloatArray,
    waiting: FloatArray | None = None,
    running: FloatArray | None = None,
) -> FloatArray:
    """Demand in pods' worth of KV cache: ``usage * (1 + waiting / max(running, 1))``.

    The cache gauge is capped at 1.0 per pod and a saturated pod queues requests instead,
    so history taken while saturated would teach the model that demand was lower than it
    was. The queued share scales the observed usage back up, but only at steps where both
    the queue and the running series have a finite value: a missing denominator is never
    assumed (dividing by an assumed 1 turned 5 waiting requests into 7 pods). Elsewhere the
    usage is taken as it is, a lower bound (see :func:`compute_uncorrected`).
    """
    usage = np.asarray(usage_sum, dtype=np.float64)
    if waiting is None and running is None:
        return usage.copy()
    if waiting is None or running is None:
        raise ValueError("the queue and running series go together")
    queue = np.asarray(waiting, dtype=np.float64)
    active = np.asarray(running, dtype=np.float64)
    if queue.shape != usage.shape:
        raise ValueError(f"queue series has {queue.size} points, usage has {usage.size}")
    if active.shape != usage.shape:
        raise ValueError(f"running series has {active.size} points, usage has {usage.size}")
    both = np.isfinite(queue) & np.isfinite(active)
    share = np.where(both, np.maximum(np.where(both, queue, 0.0), 0.0), 0.0) / np.maximum(
        np.where(both, active, 1.0), 1.0
    )
    corrected: FloatArray = usage * (1.0 + share)
    return corrected


def compute_uncorrected(
    usage_sum: FloatArray, waiting: FloatArray, running: FloatArray
) -> npt.NDArray[np.bool_]:
    """Steps with usage where the saturation correction could not be applied (the queue or
    the running series has no finite value there): demand there is only a lower bound."""
    usage = np.asarray(usage_sum, dtype=np.float64)
    both = np.isfinite(np.asarray(waiting, dtype=np.float64)) & np.isfinite(
        np.asarray(running, dtype=np.float64)
    )
    gaps: npt.NDArray[np.bool_] = np.isfinite(usage) & ~both
    return gaps
