"""What the loop needs of the world outside it, named as protocols: the Kubernetes API for one
HPA, Prometheus' range reads, the clock and the fit runner.

The loop (the controller, a target's cycle, its signals' fitters) is typed against these, not
against the adapters that meet them (``kube.KubeClient``, ``prometheus.PrometheusSource``,
``fit_runner.ProcessFitRunner``), so a test or another adapter stands in without a client
library. This module imports none: only the values floor below it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Literal, Protocol, TypeVar, runtime_checkable

from predictive_scaler.ranges import GroupedRanges, RangeResult
from predictive_scaler.values import HpaSnapshot, ObjectRef

__all__ = [
    "Clock",
    "FitCall",
    "FitRunner",
    "GroupedMetricSource",
    "HpaApi",
    "MetricSource",
    "Sleeper",
]

_T = TypeVar("_T")

Clock = Callable[[], datetime]
"""The loop's ``now()`` (timezone-aware); tests pass a fake one."""
Sleeper = Callable[[float], Awaitable[None]]
"""The loop's sleep of so many seconds (``asyncio.sleep``, or a test's that returns at once)."""


class HpaApi(Protocol):
    """Read, patch and report on one HPA: what the reconciler, the informer's cached reads and
    the restore queue share (met by ``kube.KubeClient``)."""

    async def read_hpa(self, namespace: str, name: str) -> HpaSnapshot: ...

    async def patch_hpa_min_replicas(
        self, snapshot: HpaSnapshot, min_replicas: int, annotations: Mapping[str, str | None]
    ) -> HpaSnapshot: ...

    async def create_event(
        self,
        involved: HpaSnapshot | ObjectRef,
        reason: str,
        message: str,
        *,
        now: datetime,
        type_: Literal["Normal", "Warning"] = "Normal",
    ) -> str: ...


class MetricSource(Protocol):
    """A target's own range query, as a cycle asks it (met by ``prometheus.PrometheusSource``
    and the controller's ``source_switch.SourceSwitch``)."""

    async def fetch_range(
        self, query: str, start: datetime, end: datetime, step_seconds: float
    ) -> RangeResult: ...


class GroupedMetricSource(Protocol):
    """A batched range query split by labels, as the prefetch asks it for many targets at once
    (met by ``prometheus.PrometheusSource`` and ``source_switch.SourceSwitch``)."""

    async def fetch_range_grouped(
        self,
        query: str,
        by: Sequence[str],
        start: datetime,
        end: datetime,
        step_seconds: float,
    ) -> RangeResult | GroupedRanges: ...


class FitCall(Protocol):
    """Runs one fit job off the event loop (a worker thread or process) within its time budget
    and gives its result: what a signal's fitter calls."""

    def __call__(self, fit: Callable[[], _T], /) -> Awaitable[_T]: ...


@runtime_checkable
class FitRunner(FitCall, Protocol):
    """A fit runner that says how many fits it runs at once (met by ``fit_runner.
    ProcessFitRunner`` and ``ThreadFitRunner``); the controller leaves one of them to the
    cycles' in-cycle fits and lets the rest run beside the cycles. A bare :class:`FitCall`
    counts as one."""

    workers: int
    """Fits it runs at the same time."""
