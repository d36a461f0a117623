"""One signal's demand over a time range, read from Prometheus as the live loop reads it.

Shared by the live loop (:mod:`predictive_scaler.reconcile`, one cycle's new points) and the
what-if backtest (:mod:`predictive_scaler.whatif`, a target's whole history), so the backtest
of a user's own target replays exactly the demand the controller would have forecast: the
same PromQL, the same freshness rule, the same saturation correction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from predictive_scaler.config import Signal
from predictive_scaler.demand import compute_demand, compute_uncorrected
from predictive_scaler.logs import Logger
from predictive_scaler.prometheus import RangeResult, RangeStatus, latest_sample_template

__all__ = ["DemandRead", "RangeReader", "fetch_signal_demand"]

FloatArray = npt.NDArray[np.float64]

RangeReader = Callable[[str, float, float, float], Awaitable[RangeResult]]
"""(query template, start, end, step) -> the answer; the caller renders ``${matchers}``."""


@dataclass(frozen=True)
class DemandRead:
    """What one read of a signal gave."""

    problem: str | None
    """Why the points are unusable (a failed or empty demand query, or no finite point);
    None when they are usable."""
    values: FloatArray | None
    """Demand per step of the grid ``start, start + step, ... <= end`` (NaN where there is
    no new sample); None when nothing may advance (ask again later)."""
    partial: str | None = None
    """Why the points are only a lower bound, or why they were kept out."""
    newest_sample: float | None = None
    """Unix seconds of the newest sample seen, when the query's shape can tell."""


async def fetch_signal_demand(
    signal: Signal,
    read: RangeReader,
    start: float,
    end: float,
    step: float,
    log: Logger,
) -> DemandRead:
    """Demand of ``signal`` at ``start, start + step, ... <= end``.

    A failed or empty demand query gives a problem and no values. Steps holding only a
    copy of an older sample (Prometheus' lookback repeats a series' last sample for five
    minutes) are NaN: a copy is not new data. A failed freshness, queue or running query
    keeps every point out (no values, the reason in ``partial``): they would be
    uncorrected, and a forecaster's history is not rewritten once it has taken them.
    """
    usage = await read(signal.query, start, end, step)
    if usage.status is RangeStatus.ERROR:
        return DemandRead(f"prometheus error: {usage.message}", None)
    if usage.status is RangeStatus.EMPTY:
        return DemandRead(f"no data: {usage.message}", None)
    used = np.array(usage.values, dtype=np.float64)
    newest_sample: float | None = None
    latest = latest_sample_template(signal.query)
    if latest is not None:
        stamps = await read(latest, start, end, step)
        if stamps.status is RangeStatus.ERROR:
            # Copies cannot be told from new data: keep the points out, ask again.
            log.warning("freshness_query_failed", signal=signal.name, error=stamps.message)
            return DemandRead(None, None, f"freshness query failed: {stamps.message}")
        if stamps.status is not RangeStatus.EMPTY:
            newest = np.asarray(stamps.values, dtype=np.float64)
            grid = np.asarray(usage.timestamps, dtype=np.float64)
            # A step whose newest sample was already there at the step before holds a copy.
            copies = ~(newest > grid - step + 1e-3)
            used[copies] = np.nan
            if np.isfinite(newest).any():
                newest_sample = float(np.nanmax(newest))
    partial: str | None = None
    if signal.queue_query is None or signal.running_query is None:
        demand = compute_demand(used)
    else:
        parts: list[FloatArray] = []
        for name, template in (("queue", signal.queue_query), ("running", signal.running_query)):
            answer = await read(template, start, end, step)
            if answer.status is RangeStatus.ERROR:
                log.warning(
                    "queue_metrics_failed", signal=signal.name, query=name, error=answer.message
                )
                reason = f"{name} query failed: {answer.message}"
                return DemandRead(None, None, reason, newest_sample)
            if answer.status is RangeStatus.EMPTY:
                parts.append(np.full(used.shape, np.nan))
            else:
                parts.append(np.asarray(answer.values, dtype=np.float64))
        waiting, running = parts
        demand = compute_demand(used, waiting, running)
        gaps = int(compute_uncorrected(used, waiting, running).sum())
        if gaps:
            # Usage alone is a lower bound of demand: it may raise, never lower.
            partial = (
                f"demand not corrected for saturation at {gaps} of {used.size} new steps "
                "(no queue or running sample)"
            )
    if usage.status is RangeStatus.PARTIAL:
        log.debug("metrics_partial", signal=signal.name, detail=usage.message)
        if not np.isfinite(demand).any():
            # Every step is NaN/Inf or has no sample: as unusable as no answer (hold, never
            # lower on it). The values still advance over them: Prometheus has them.
            problem = f"no data: no finite sample in the new points ({usage.message})"
            return DemandRead(problem, demand, None, newest_sample)
    return DemandRead(None, demand, partial, newest_sample)
