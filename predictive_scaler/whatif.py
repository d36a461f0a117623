"""What-if on a user's own target: its demand history, read from Prometheus with its
configured queries, and its policy as the simulation's settings.

The backtest then runs on this history exactly as it runs on a bundled trace, except that
the demand is not rescaled: it already is in the target's own units (the sum over its pods
of the signal, compared with the HPA's target per pod), so the frontier is the target's.

Pods are the target's configured ``selector`` (with its namespace). Flags win, then the
configuration (the signal's ``targetPerPod``), then, when a cluster is read, the HPA: its
base and max replicas, its target for the signal's metric and, without a selector, its scale
target's pods as the live loop finds them. Without a cluster the query matches every pod of
the namespace that exports the metric, and the notes say so.
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
from predictive_scaler.config import (
    HPA_METRIC_ALIASES,
    Config,
    Policy,
    Signal,
    Target,
    format_duration,
)
from predictive_scaler.demand_query import fetch_signal_demand
from predictive_scaler.kube import KubeClient, load_api_client
from predictive_scaler.logs import Logger
from predictive_scaler.ports import MetricSource
from predictive_scaler.prometheus import MAX_POINTS_PER_QUERY, PrometheusSource
from predictive_scaler.promql import render_matchers, render_query, selector_matchers
from predictive_scaler.ranges import RangeResult
from predictive_scaler.reconcile import determine_base
from predictive_scaler.settings import prometheus_settings
from predictive_scaler.signals import demand_template
from predictive_scaler.values import KubeApiError

__all__ = [
    "DEFAULT_HPA_TARGET",
    "DEFAULT_SINCE_SECONDS",
    "HpaFacts",
    "TargetHistory",
    "WhatIfError",
    "WhatIfRequest",
    "fetch_hpa_facts",
    "fetch_target_history",
    "fetch_what_if",
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
    read_cluster: bool = False
    """Read the HPA (its base and max replicas, its target for the signal's metric and its
    scale target's pods) from the cluster of ``kubeconfig``/``context``."""
    kubeconfig: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class HpaFacts:
    """What the what-if takes from the target's HPA when a cluster is read."""

    min_replicas: int
    """The user's own minReplicas (the base, not what the controller raised it to)."""
    max_replicas: int
    target_per_pod: float | None
    """The HPA's AverageValue target for the signal's metric, when it has one."""
    matchers: str | None
    """``${matchers}`` for the scale target's pods (as the live loop finds them); None when
    a selector is configured or the scale target has none."""


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


async def fetch_hpa_facts(kube: KubeClient, target: Target, signal: Signal) -> HpaFacts:
    """Read the target's HPA and, without a configured selector, its scale target's pods."""
    try:
        snapshot = await kube.read_hpa(target.namespace, target.name)
    except KubeApiError as error:
        raise WhatIfError(
            f"reading HorizontalPodAutoscaler {target.namespace}/{target.name} failed: {error}"
        ) from None
    base, _ = determine_base(snapshot)
    per_pod: float | None = None
    if signal.hpa_metric is not None:
        for name in HPA_METRIC_ALIASES.get(signal.hpa_metric, (signal.hpa_metric,)):
            per_pod = snapshot.target_average_value_for(name)
            if per_pod is not None:
                break
    matchers: str | None = None
    if not target.selector:
        try:
            selector = await kube.read_scale_selector(target.namespace, snapshot.scale_target_ref)
            equal, other = selector_matchers(selector or "")
        except (KubeApiError, ValueError) as error:
            raise WhatIfError(
                f"reading the pods of {target.namespace}/{target.name}'s scale target failed: "
                f"{error} (set the target's selector)"
            ) from None
        if selector:
            labels = render_matchers({"namespace": target.namespace, **equal})
            matchers = ",".join(x for x in (labels, *other) if x)
    return HpaFacts(base, snapshot.max_replicas, per_pod, matchers)


async def fetch_target_history(
    target: Target,
    signal: Signal,
    source: MetricSource,
    start: float,
    end: float,
    step: float,
    *,
    progress: Progress | None = None,
    log: Logger | None = None,
    matchers: str | None = None,
) -> tuple[FloatArray, str]:
    """The signal's demand at ``start, start + step, ... <= end`` (NaN where no new sample),
    read a day at a time with the live loop's own reading (:func:`fetch_signal_demand`),
    and the demand query as sent. ``matchers`` (the scale target's pods) stand in for the
    configured ones."""
    log = log or _command_line_logger(target.id)
    if matchers is None:
        matchers = render_matchers(target.match_labels)

    async def read(template: str, first: float, last: float, step_s: float) -> RangeResult:
        query = render_query(template, {}, raw={"matchers": matchers})
        return await source.fetch_range(
            query, datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC), step_s
        )

    query = render_query(demand_template(signal), {}, raw={"matchers": matchers})
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
    """:func:`fetch_what_if` for the command line: its own event loop, and the cluster's
    client when ``request.read_cluster``."""

    async def run() -> TargetHistory:
        if not request.read_cluster:
            return await fetch_what_if(config, request, now=now, progress=progress)
        try:
            api_client = await load_api_client(request.kubeconfig, request.context)
        except Exception as error:  # a missing or broken kubeconfig: say so in one line
            raise WhatIfError(f"no cluster: {type(error).__name__}: {error}") from None
        try:
            return await fetch_what_if(
                config, request, kube=KubeClient(api_client), now=now, progress=progress
            )
        finally:
            await api_client.close()

    return asyncio.run(run())


async def fetch_what_if(
    config: Config,
    request: WhatIfRequest,
    *,
    kube: KubeClient | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> TargetHistory:
    """Resolve the target, read its HPA (with ``kube``) and its history over
    ``request.since_seconds`` up to ``now``, and build its simulation settings: flags first,
    then the configuration, then the HPA. Raises :class:`WhatIfError`."""
    target = find_target(config, request.target)
    signal = _find_signal(target, request.signal)
    policy = replace(target.policy, **dict(request.policy_overrides or {}))
    settings = prometheus_settings(config.prometheus, request.prometheus_url)
    if settings is None:
        raise WhatIfError("no Prometheus URL: pass --prometheus-url or set prometheus.url")
    facts = await fetch_hpa_facts(kube, target, signal) if kube is not None else None
    step = policy.step_seconds
    moment = now if now is not None else datetime.now(UTC)
    end = math.floor(moment.timestamp() / step) * step
    start = end - math.floor(request.since_seconds / step) * step
    async with PrometheusSource(settings) as source:
        raw, query = await fetch_target_history(
            target,
            signal,
            source,
            start,
            end,
            step,
            progress=progress,
            matchers=facts.matchers if facts is not None else None,
        )
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
    hpa_target = (
        request.hpa_target
        or signal.target_per_pod
        or (facts.target_per_pod if facts is not None else None)
    )
    if hpa_target is None:
        hpa_target = DEFAULT_HPA_TARGET
        notes.append(
            f"HPA target per pod assumed {DEFAULT_HPA_TARGET} (set the signal's targetPerPod, "
            "pass --target-value, or --kubeconfig to read the HPA's)"
        )
    if not target.selector and (facts is None or facts.matchers is None):
        notes.append(
            f"pods: every pod of namespace {target.namespace} the query matches (no selector "
            "configured and no scale target read; pass --kubeconfig to read it)"
        )
    if policy.exclude:
        notes.append(f"{len(policy.exclude)} exclusion ranges are replayed, not left out")
    low = request.min_replicas or (facts.min_replicas if facts is not None else None)
    high = request.max_replicas or (facts.max_replicas if facts is not None else None)
    return TargetHistory(
        name=f"{target.namespace}/{target.name}/{signal.name}",
        query=query,
        demand=demand,
        step_seconds=step,
        start=datetime.fromtimestamp(start + first * step, UTC),
        policy=policy,
        settings=resolve_settings(policy, demand, hpa_target, low, high),
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
