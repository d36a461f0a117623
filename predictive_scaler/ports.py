"""What the loop needs of the Kubernetes API for one HPA: the one protocol the reconciler,
the informer's cached reads and the restore queue share (met by ``kube.KubeClient``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal, Protocol

from predictive_scaler.values import HpaSnapshot, ObjectRef

__all__ = ["HpaApi"]


class HpaApi(Protocol):
    """Read, patch and report on one HPA."""

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
