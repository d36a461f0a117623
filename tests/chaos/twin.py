"""The decision the complete data would give, for the soak's partial-data invariant.

A cycle with a failed or partial query (the usage, queue or running query of a target, a
batch that failed, half the pods' series gone) must never raise minReplicas above what the
same cycle would have decided on the complete data. To know what that is, the soak takes a
copy of the target's real ``TargetReconciler`` as it stood before the round (its history
buffer, fitted model, decision clocks, pods: everything a cycle reads) and, after the round,
runs that copy's real cycle once more on the complete data: against a second fault-free
Prometheus front answering from the same demand function, on the HPA exactly as the real
cycle read it, at the real cycle's own moment, with fits inline and writes impossible
(``may_patch`` is false, so a change is only recommended). Everything else is the code
under test, unchanged, so on a cycle without faults the copy decides exactly what the real
one did (the soak checks that too: the twin's fidelity).

The copy is a ``copy.deepcopy`` whose memo maps the reconciler's I/O handles (its Prometheus
source, its HPA API, its fit runner, its clock, its leadership check, its logger) to the
twin's own (the background-fit semaphore is shared: the twin runs when the real cycles are
done), so nothing of the real controller is touched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from predictive_scaler.kube import HpaSnapshot, KubeApiError, ObjectRef
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
from predictive_scaler.reconcile import CycleReport, TargetReconciler


async def _inline_fit(fit: Callable[[], Any]) -> Any:
    return fit()


class _ReadOnce:
    """The HPA API of a twin: the one snapshot the real cycle read, never a write."""

    def __init__(self) -> None:
        self.snapshot: HpaSnapshot | None = None

    async def read_hpa(self, namespace: str, name: str) -> HpaSnapshot:
        if self.snapshot is None:
            raise KubeApiError(0, "the twin has no snapshot")
        return self.snapshot

    async def patch_hpa_min_replicas(
        self, snapshot: HpaSnapshot, min_replicas: int, annotations: Mapping[str, str | None]
    ) -> HpaSnapshot:
        raise AssertionError("a twin never writes (may_patch is false)")

    async def create_event(
        self,
        involved: HpaSnapshot | ObjectRef,
        reason: str,
        message: str,
        *,
        now: datetime,
        type_: Literal["Normal", "Warning"] = "Normal",
    ) -> str:
        raise AssertionError("a twin never emits Events")


class _At:
    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        assert self.now is not None
        return self.now


class Twin:
    """One copy of one reconciler, taken before a round; :meth:`decide` runs it."""

    def __init__(self, real: TargetReconciler, source: PrometheusSource) -> None:
        self.real = real
        self.api = _ReadOnce()
        self.clock = _At()
        memo: dict[int, Any] = {
            id(real.source): source,
            id(real.kube): self.api,
            id(real.fit_runner): _inline_fit,
            id(real.clock): self.clock,
            id(real.may_patch): _never,
            id(real.log): real.log,
            id(real.scale_selector): None,  # the pods as the copy found them
            id(real.background_fits): real.background_fits,
        }
        self.copy: TargetReconciler = copy.deepcopy(real, memo)

    async def decide(self, snapshot: HpaSnapshot, at: datetime) -> CycleReport:
        """The copy's cycle on ``snapshot`` at ``at`` (the real cycle's read and moment)."""
        self.api.snapshot = snapshot
        self.clock.now = at
        return await self.copy.reconcile()


def _never() -> bool:
    return False


def complete_source(url: str) -> PrometheusSource:
    """The twin's Prometheus: the fault-free front, with a generous timeout (its answers
    are the reference, so a slow one under load must not turn into a failure)."""
    return PrometheusSource(PrometheusSettings(url=url, timeout_seconds=30.0))
