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
from predictive_scaler.logs import Logger
from predictive_scaler.promql import fresh_samples_template, latest_sample_template
from predictive_scaler.ranges import RangeResult, RangeStatus
from predictive_scaler.signals import kind_of

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
    others_seen: bool = False
    """Every one of the kind's other queries answered with a finite sample."""


async def fetch_signal_demand(
    signal: Signal,
    read: RangeReader,
    start: float,
    end: float,
    step: float,
    log: Logger,
    *,
    others_seen: bool | None = None,
) -> DemandRead:
    """Demand of ``signal`` at ``start, start + step, ... <= end``.

    The signal's kind (:mod:`predictive_scaler.signals`) names the queries, the demand's own
    first, and turns their answers into demand. A failed or empty demand query gives a
    problem and no values. Steps holding only a copy of an older sample (Prometheus'
    lookback repeats a series' last sample for five minutes) are NaN: a copy is not new
    data. A failed freshness query, or any of the kind's other queries (queue, running),
    keeps every point out (no values, the reason in ``partial``): they would be uncorrected,
    and a forecaster's history is not rewritten once it has taken them.

    A step that lacks an answer of the other queries takes the kind's partial demand (a
    lower bound, ``partial``: it may raise, never lower) when ``others_seen`` is None (the
    backtest) or when they have never answered for this signal (a target that does not
    export them). Once they have (``others_seen``, or in this answer), such a step is a gap
    in them, and the points are kept out as for a failed query: the lower bound at some
    steps and the demand at others make jumps that widen the forecast's band, so it could
    raise above what the complete data would give.
    """
    first, *others = kind_of(signal).queries(signal)
    usage = await read(first.template, start, end, step)
    if usage.status is RangeStatus.ERROR:
        return DemandRead(f"prometheus error: {usage.message}", None)
    if usage.status is RangeStatus.EMPTY:
        return DemandRead(f"no data: {usage.message}", None)
    used = np.array(usage.values, dtype=np.float64)
    newest_sample: float | None = None
    fresh = fresh_samples_template(first.template, step)
    if fresh is not None:
        counts = await read(fresh, start, end, step)
        if counts.status is RangeStatus.ERROR:
            # Copies cannot be told from new data: keep the points out, ask again.
            log.warning("freshness_query_failed", signal=signal.name, error=counts.message)
            return DemandRead(None, None, f"freshness query failed: {counts.message}")
        taken = np.asarray(counts.values, dtype=np.float64)
        # A step where no series took a sample in its own interval holds a copy (an absent
        # count too: EMPTY means the lookback repeated older samples at every step).
        new = taken > 0 if counts.status is not RangeStatus.EMPTY else np.zeros(used.shape, bool)
        used[~new] = np.nan
        newest_sample = await _newest_sample(
            signal, first.template, read, end, step, usage, new, log
        )
    parts: dict[str, FloatArray] = {}
    for other in others:
        answer = await read(other.template, start, end, step)
        if answer.status is RangeStatus.ERROR:
            log.warning(
                "queue_metrics_failed", signal=signal.name, query=other.role, error=answer.message
            )
            reason = f"{other.role} query failed: {answer.message}"
            return DemandRead(None, None, reason, newest_sample)
        if answer.status is RangeStatus.EMPTY:
            parts[other.role] = np.full(used.shape, np.nan)
        else:
            parts[other.role] = np.asarray(answer.values, dtype=np.float64)
    demand, partial = kind_of(signal).compute(used, parts)
    answered = bool(parts) and all(bool(np.isfinite(v).any()) for v in parts.values())
    if partial is not None and others_seen is not None and (others_seen or answered):
        log.warning("queue_metrics_gaps", signal=signal.name, partial=partial)
        return DemandRead(None, None, f"gaps in the other queries: {partial}", newest_sample, True)
    if usage.status is RangeStatus.PARTIAL:
        log.debug("metrics_partial", signal=signal.name, detail=usage.message)
        if not np.isfinite(demand).any():
            # Every step is NaN/Inf or has no sample: as unusable as no answer (hold, never
            # lower on it). The values still advance over them: Prometheus has them.
            problem = f"no data: no finite sample in the new points ({usage.message})"
            return DemandRead(problem, demand, None, newest_sample, answered)
    return DemandRead(None, demand, partial, newest_sample, answered)


async def _newest_sample(
    signal: Signal,
    template: str,
    read: RangeReader,
    end: float,
    step: float,
    usage: RangeResult,
    new: npt.NDArray[np.bool_],
    log: Logger,
) -> float | None:
    """Unix seconds of the newest sample: its own timestamp, asked at the last step that took
    a sample only (one step is cheap; a whole range is not), where the lookback is sure to
    see it. That step is ``end`` while data flows, so a batched cycle asks it for all its
    targets at once. Without an answer, the earliest it can be: just after the step before
    (older is the safe side: a longer horizon, an earlier staleness)."""
    if not new.any():
        return None
    grid = np.asarray(usage.timestamps, dtype=np.float64)
    last_new = float(grid[np.flatnonzero(new)[-1]])
    latest = latest_sample_template(template)
    if latest is not None:
        at = end if last_new >= end else last_new
        answer = await read(latest, at, at, step)
        if answer.status is RangeStatus.ERROR:
            log.warning("newest_sample_query_failed", signal=signal.name, error=answer.message)
        elif answer.status is not RangeStatus.EMPTY and np.isfinite(answer.values).any():
            return float(np.nanmax(answer.values))
    return last_new - step + 1e-3
