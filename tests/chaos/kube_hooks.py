"""Mid-cycle Kubernetes faults: a wrapper around the real ``KubeClient`` that runs hooks at
the exact moments a fault matters (after the HPA was read, right before a patch is sent).

The requests still go over HTTP through ``kubernetes_asyncio`` to the API double; the hooks
only change the double's store (``put_object``/``delete_object``), its Lease, the fake clock,
or cancel the cycle, between two real requests. Everything else is delegated unchanged, so a
``Controller`` can take it in place of its ``KubeClient``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from predictive_scaler.kube import HpaSnapshot, KubeClient

Hook = Callable[[HpaSnapshot], Awaitable[object] | object]


class HookedKube:
    """Delegates to ``inner``; ``after_read`` / ``before_patch`` hooks fire once each by
    default (``keep=True`` keeps them armed)."""

    def __init__(self, inner: KubeClient) -> None:
        self.inner = inner
        self._after_read: list[tuple[str | None, Hook, bool]] = []
        self._before_patch: list[tuple[str | None, Hook, bool]] = []
        self.patches: list[tuple[str, str, int]] = []
        """(namespace, name, minReplicas) of every patch that succeeded."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def after_read(self, hook: Hook, *, namespace: str | None = None, keep: bool = False) -> None:
        self._after_read.append((namespace, hook, keep))

    def before_patch(self, hook: Hook, *, namespace: str | None = None, keep: bool = False) -> None:
        self._before_patch.append((namespace, hook, keep))

    @staticmethod
    async def _fire(hooks: list[tuple[str | None, Hook, bool]], snapshot: HpaSnapshot) -> None:
        for entry in list(hooks):
            namespace, hook, keep = entry
            if namespace is not None and namespace != snapshot.namespace:
                continue
            if not keep:
                if entry not in hooks:
                    continue  # fired meanwhile by a concurrent cycle (while we awaited a hook)
                hooks.remove(entry)
            result = hook(snapshot)
            if inspect.isawaitable(result):
                await result

    async def read_hpa(self, namespace: str, name: str) -> HpaSnapshot:
        snapshot = await self.inner.read_hpa(namespace, name)
        await self._fire(self._after_read, snapshot)
        return snapshot

    async def patch_hpa_min_replicas(
        self, snapshot: HpaSnapshot, min_replicas: int, annotations: Mapping[str, str | None]
    ) -> HpaSnapshot:
        await self._fire(self._before_patch, snapshot)
        patched = await self.inner.patch_hpa_min_replicas(snapshot, min_replicas, annotations)
        self.patches.append((snapshot.namespace, snapshot.name, min_replicas))
        return patched
