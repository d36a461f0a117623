"""What-if on a user's own target: its demand history, read from Prometheus with its
configured queries, and its policy as the simulation's settings.

The backtest then runs on this history exactly as it runs on a bundled trace, except that
the demand is not rescaled: it already is in the target's own units (the sum over its pods
of the signal, compared with the HPA's target per pod), so the frontier is the target's.

Pods are the target's configured ``selector`` (with its namespace); without one, every pod
of the namespace that exports the metric, since no cluster is read to find the HPA's scale
target. The HPA's target value and min/max replicas come from the signal's ``targetPerPod``
and from flags.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import structlog

from predictive_scaler.backtest import SimulationSettings, simulation_settings
from predictive_scaler.config import Config, Policy, Signal, Target, format_duration
from predictive_scaler.demand_query import fetch_signal_demand
from predictive_scaler.logs import Logger
from predictive_scaler.prometheus import (
    MAX_POINTS_PER_QUERY,
    PrometheusSource,
    RangeResult,
    render_matchers,
    render_query,
)
from predictive_scaler.settings import prometheus_settings

__all__ = [
    "DEFAULT_HPA_TARGET",
    "DEFAULT_SINCE_SECONDS",
    "TargetHistory",
    "WhatIfError",
    "WhatIfRequest",
    "fetch_target_history",
    "find_target",
    "read_target_history",
    "resolve_settings",
]

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[int, int], None]

DEFAULT_SINCE_SECONDS: Final = 14 * 86_400.0
"""History the what-if reads when ``--since`` is not given: two weeks, so the measured half
holds a whole week."""
DEFAULT_HPA_TARGET: Final = 0.7
"""The HPA's target per pod when neither the signal's ``targetPerPod`` nor a flag gives one
(the backtest's scenario default)."""
_CHUNK_SECONDS: Final = 86_400.0
"""One range read per day of history (at most the adapter's points per query), so progress
moves on a long read."""


class WhatIfError(Exception):
    """The what-if cannot run: an unknown target or signal, no Prometheus URL, no or too
    little data. The message says which and names the query."""


@dataclass(frozen=True)
class WhatIfRequest:
    """What the user asked for on the command line."""

    target: str
    """``NAMESPACE/NAME`` of the HPA (or the target's configured ``id``)."""
    since_seconds: float = DEFAULT_SINCE_SECONDS
    prometheus_url: str | None = None
    signal: str | None = None
    """The signal to replay; None means the target's first."""
    policy_overrides: Mapping[str, Any] | None = None
    """Policy fields given explicitly as flags (they win over the configuration)."""
    hpa_target: float | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None


@dataclass(frozen=True)
class TargetHistory:
    """A target's demand over the window, ready for the simulator."""

    name: str
    """``NAMESPACE/NAME/SIGNAL``."""
    query: str
    """The demand query as sent (``${matchers}`` rendered)."""
    demand: FloatArray
    """Demand per step from the first to the last step with data."""
    step_seconds: float
    start: datetime
    """Time of ``demand[0]``."""
    policy: Policy
    """The target's policy with the flags' overrides."""
    settings: SimulationSettings
    notes: tuple[str, ...] = ()

    @property
    def span_seconds(self) -> float:
        return (len(self.demand) - 1) * self.step_seconds


def find_target(config: Config, ref: str) -> Target:
    """The target whose ``NAMESPACE/NAME`` (or ``id``) is ``ref``, enabled or not."""
    for target in config.targets:
        if ref in (f"{target.namespace}/{target.name}", target.id):
            return target
    known = ", ".join(f"{t.namespace}/{t.name}" for t in config.targets) or "none"
    raise WhatIfError(f"no target {ref!r} in the configuration (targets: {known})")


def _find_signal(target: Target, name: str | None) -> Signal:
    if name is None:
        return target.signals[0]
    for signal in target.signals:
        if signal.name == name:
            return signal
    known = ", ".join(s.name for s in target.signals)
    raise WhatIfError(f"target {target.id} has no signal {name!r} (signals: {known})")


def resolve_settings(
    policy: Policy,
    demand: FloatArray,
    hpa_target: float,
    min_replicas: int | None,
    max_replicas: int | None,
) -> SimulationSettings:
    """The simulation of ``policy`` on an HPA with this target and these replicas; max
    defaults to three times the replicas the demand's 99th percentile needs, as the bundled
    backtest's does."""
    p99 = float(np.percentile(demand, 99))
    peak = max(1, math.ceil(p99 / hpa_target - 1e-9))
    low = min_replicas if min_replicas is not None else 1
    high = max_replicas if max_replicas is not None else max(3 * peak, low)
    try:
        return simulation_settings(
            policy, target=hpa_target, peak_replicas=peak, min_replicas=low, max_replicas=high
        )
    except ValueError as error:
        raise WhatIfError(str(error)) from None


async def fetch_target_history(
    target: Target,
    signal: Signal,
    source: PrometheusSource,
    start: float,
    end: float,
    step: float,
    *,
    progress: Progress | None = None,
    log: Logger | None = None,
) -> tuple[FloatArray, str]:
    """The signal's demand at ``start, start + step, ... <= end`` (NaN where no new sample),
    read a day at a time with the live loop's own reading (:func:`fetch_signal_demand`),
    and the demand query as sent."""
    log = log or _command_line_logger(target.id)
    matchers = render_matchers(target.match_labels)

    async def read(template: str, first: float, last: float, step_s: float) -> RangeResult:
        query = render_query(template, {}, raw={"matchers": matchers})
        return await source.fetch_range(
            query, datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC), step_s
        )

    query = render_query(signal.query, {}, raw={"matchers": matchers})
    n = math.floor((end - start) / step + 1e-9) + 1
    chunk = max(1, min(MAX_POINTS_PER_QUERY, round(_CHUNK_SECONDS / step)))
    out = np.full(n, np.nan)
    seen_series = False
    for first in range(0, n, chunk):
        last = min(n, first + chunk) - 1
        got = await fetch_signal_demand(
            signal, read, start + first * step, start + last * step, step, log
        )
        if got.problem is not None and got.problem.startswith("prometheus error"):
            raise WhatIfError(f"{got.problem} (query {query})")
        if got.values is None and got.partial is not None:
            raise WhatIfError(f"{got.partial} (query of {query})")
        if got.values is not None:
            seen_series = True
            out[first : last + 1] = got.values
        if progress is not None:
            progress(last + 1, n)
    if not seen_series or not np.isfinite(out).any():
        raise WhatIfError(
            f"no data: the query {query} returned no samples between {_iso(start)} and {_iso(end)}"
        )
    return out, query


def read_target_history(
    config: Config,
    request: WhatIfRequest,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> TargetHistory:
    """Resolve the target, read its history over ``request.since_seconds`` up to ``now``,
    and build its simulation settings. Raises :class:`WhatIfError`."""

    target = find_target(config, request.target)
    signal = _find_signal(target, request.signal)
    policy = replace(target.policy, **dict(request.policy_overrides or {}))
    settings = prometheus_settings(config.prometheus, request.prometheus_url)
    if settings is None:
        raise WhatIfError("no Prometheus URL: pass --prometheus-url or set prometheus.url")
    step = policy.step_seconds
    moment = now if now is not None else datetime.now(UTC)
    end = math.floor(moment.timestamp() / step) * step
    start = end - math.floor(request.since_seconds / step) * step

    async def fetch() -> tuple[FloatArray, str]:
        async with PrometheusSource(settings) as source:
            return await fetch_target_history(
                target, signal, source, start, end, step, progress=progress
            )

    raw, query = asyncio.run(fetch())
    demand, notes = _trim_and_fill(raw, step)
    first = int(np.flatnonzero(np.isfinite(raw))[0])
    need = 2 * max(policy.min_history_seconds, policy.horizon_seconds)
    span = (len(demand) - 1) * step
    if span < need:
        raise WhatIfError(
            f"too short: the query {query} has {format_duration(span)} of data "
            f"({len(demand)} steps of {format_duration(step)}); the what-if needs at least "
            f"{format_duration(need)} (twice the larger of minHistory and warm-up + interval: "
            "the first half trains, the second is measured)"
        )
    hpa_target = request.hpa_target or signal.target_per_pod
    if hpa_target is None:
        hpa_target = DEFAULT_HPA_TARGET
        notes.append(
            f"HPA target per pod assumed {DEFAULT_HPA_TARGET} (set the signal's targetPerPod "
            "or pass --target-value)"
        )
    if not target.selector:
        notes.append(
            f"pods: every pod of namespace {target.namespace} the query matches (no selector "
            "configured; the live loop reads the HPA's scale target)"
        )
    if policy.exclude:
        notes.append(f"{len(policy.exclude)} exclusion ranges are replayed, not left out")
    return TargetHistory(
        name=f"{target.namespace}/{target.name}/{signal.name}",
        query=query,
        demand=demand,
        step_seconds=step,
        start=datetime.fromtimestamp(start + first * step, UTC),
        policy=policy,
        settings=resolve_settings(
            policy, demand, hpa_target, request.min_replicas, request.max_replicas
        ),
        notes=tuple(notes),
    )


def _trim_and_fill(raw: FloatArray, step: float) -> tuple[FloatArray, list[str]]:
    """From the first to the last step with data; a step in between with no new sample
    holds the value before it (a scrape gap is not a drop in demand, and the HPA reading
    through Prometheus' lookback sees the same value)."""
    finite = np.flatnonzero(np.isfinite(raw))
    window = raw[finite[0] : finite[-1] + 1].copy()
    gaps = ~np.isfinite(window)
    notes: list[str] = []
    if gaps.any():
        index = np.where(~gaps, np.arange(window.size), 0)
        np.maximum.accumulate(index, out=index)
        window = window[index]
        notes.append(
            f"{int(gaps.sum())} of {window.size} steps had no new sample and hold the value "
            f"before them (step {format_duration(step)})"
        )
    return window, notes


def _command_line_logger(target_id: str) -> Logger:
    """Warnings on stderr, one line each, without configuring the process' logging (a
    command run for a person: the live loop's debug lines would drown the figures)."""
    logger: Logger = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    ).bind(target=target_id)
    return logger


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
