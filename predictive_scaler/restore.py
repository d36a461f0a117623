"""Every base given back: the orphan sweep and the restore retry queue.

The HPA's own annotations say what is ours (``base-min-replicas`` and the rest, written with
every patch), so no other store is needed to find what must be handed back:

- **The sweep** lists HPAs (cluster-wide, or per namespace where RBAC allows only that) and
  queues every one that carries our annotations but has no enabled target in the
  configuration: a target removed while no controller ran (the ConfigMap changed and the pods
  restarted together), one that was dry-run when it went (dry run never patches, but the live
  run before it did), or a restore lost with the process that queued it. It runs at start and
  on every reload, as soon as this replica may patch (a follower's waits until it leads).
- **The queue** restores each entry (base back, our annotations removed, one merge patch
  guarded by resourceVersion) and retries failures through a delay sequence on the injected
  clock, until the restore succeeds or the HPA is gone. An HPA another controller owns (KEDA)
  is left alone; a base the user edited by hand since our last patch is kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, Protocol

from predictive_scaler.annotations import MANAGED_ANNOTATIONS
from predictive_scaler.config import Config
from predictive_scaler.logs import get_logger
from predictive_scaler.ownership import find_foreign_owner
from predictive_scaler.ports import Clock, HpaApi
from predictive_scaler.reconcile import MAX_CONFLICT_RETRIES, determine_base
from predictive_scaler.values import ConflictError, ForbiddenError, HpaSnapshot, KubeApiError

__all__ = [
    "REASON_BASE_RESTORED",
    "RESTORE_BACKOFF_SECONDS",
    "OrphanSweep",
    "RestoreOutcome",
    "RestoreQueue",
    "find_orphans",
    "is_managed",
    "list_hpas_visible",
    "restore_base",
]

REASON_BASE_RESTORED: Final = "BaseRestored"
"""The Event reason of a base given back."""
RESTORE_BACKOFF_SECONDS: Final = (10.0, 30.0, 60.0, 120.0, 300.0)
"""Delays before retrying a failed restore (or a failed sweep); the last one repeats."""

Key = tuple[str, str]
RestoreOutcome = Literal["restored", "clean", "gone", "owned", "failed", "not_leader"]
"""``restored`` (patched back), ``clean`` (nothing of ours on it), ``gone`` (404), ``owned``
(another controller's, left alone): done. ``failed`` and ``not_leader``: retry later."""

_DONE: Final = frozenset({"restored", "clean", "gone", "owned"})

log = get_logger()


class HpaLister(Protocol):
    async def list_hpas(self, namespace: str | None = None) -> list[HpaSnapshot]: ...


class HpaCache(Protocol):
    """The informer's view (:class:`~predictive_scaler.informer.HpaInformer`)."""

    @property
    def scopes(self) -> list[str | None]: ...

    @property
    def synced(self) -> bool: ...

    def snapshots(self) -> list[HpaSnapshot]: ...


CACHE_SYNC_GRACE_SECONDS: Final = 60.0
"""How long a requested sweep waits for a cluster-wide informer to sync before it lists by
itself (a watch RBAC refuses never syncs)."""


class RestoreCounter(Protocol):
    def count_restore(self, result: str) -> None: ...


def is_managed(snapshot: HpaSnapshot) -> bool:
    """Whether the HPA carries any of our annotations (a patch of ours landed on it)."""
    return any(key in snapshot.annotations for key in MANAGED_ANNOTATIONS)


def find_orphans(
    hpas: Iterable[HpaSnapshot], config: Config, owns: Callable[[str, str], bool]
) -> list[Key]:
    """Managed HPAs this shard owns that no enabled target of ``config`` names (pure)."""
    enabled = {(t.namespace, t.name) for t in config.enabled_targets()}
    return sorted(
        (h.namespace, h.name)
        for h in hpas
        if is_managed(h) and (h.namespace, h.name) not in enabled and owns(h.namespace, h.name)
    )


async def list_hpas_visible(kube: HpaLister, namespaces: Iterable[str]) -> list[HpaSnapshot]:
    """Every HPA we may see: one cluster-wide list, or (when RBAC refuses that with a 403)
    one list per namespace in ``namespaces``. Raises the first other failure."""
    try:
        return await kube.list_hpas(None)
    except ForbiddenError:
        pass
    found: list[HpaSnapshot] = []
    for namespace in sorted(set(namespaces)):
        try:
            found += await kube.list_hpas(namespace)
        except ForbiddenError as error:
            # Without list there, its removed targets are found only by name (the queue).
            log.warning("hpa_list_forbidden", namespace=namespace, error=str(error))
    return found


async def restore_base(
    kube: HpaApi, namespace: str, name: str, *, may_patch: Callable[[], bool], now: datetime
) -> RestoreOutcome:
    """Give one HPA its base minReplicas back and remove our annotations, in one merge patch
    guarded by resourceVersion (a 409 re-reads, up to :data:`MAX_CONFLICT_RETRIES` times)."""
    target = f"{namespace}/{name}"
    for _attempt in range(MAX_CONFLICT_RETRIES):
        if not may_patch():
            return "not_leader"
        try:
            snapshot = await kube.read_hpa(namespace, name)
        except KubeApiError as error:
            if error.status == 404:
                return "gone"
            log.warning("hpa_read_failed", target=target, status=error.status, error=str(error))
            return "failed"
        if not is_managed(snapshot):
            return "clean"
        owner = find_foreign_owner(snapshot)
        if owner is not None:
            # Its owner writes minReplicas; a patch would only start the fight again.
            log.warning("restore_skipped", target=target, reason=owner.reason, owner=owner.owner)
            return "owned"
        base, _edited = determine_base(snapshot)
        if not may_patch():
            return "not_leader"
        try:
            await kube.patch_hpa_min_replicas(snapshot, base, dict.fromkeys(MANAGED_ANNOTATIONS))
        except ConflictError:
            continue
        except KubeApiError as error:
            if error.status == 404:
                return "gone"
            log.warning("restore_failed", target=target, status=error.status, error=str(error))
            return "failed"
        log.info("base_restored", target=target, old=snapshot.min_replicas, new=base)
        if snapshot.min_replicas != base:
            try:
                await kube.create_event(
                    snapshot,
                    REASON_BASE_RESTORED,
                    f"minReplicas {snapshot.min_replicas} -> {base}: the target is no longer "
                    "managed by predictive-scaler",
                    now=now,
                )
            except KubeApiError as error:
                log.warning("event_failed", target=target, status=error.status, error=str(error))
        return "restored"
    log.warning("restore_failed", target=target, error="conflicts on every attempt")
    return "failed"


@dataclass
class _Entry:
    due: datetime
    attempts: int = 0


class RestoreQueue:
    """HPAs whose base must be given back, each retried with backoff until done
    (``key in queue``, ``len(queue)`` and ``not queue`` say what is pending)."""

    def __init__(
        self,
        kube: HpaApi,
        *,
        clock: Clock,
        may_patch: Callable[[], bool],
        metrics: RestoreCounter | None = None,
        backoff_seconds: Sequence[float] = RESTORE_BACKOFF_SECONDS,
    ) -> None:
        if not backoff_seconds:
            raise ValueError("backoff_seconds must not be empty")
        self.kube = kube
        self.clock = clock
        self.may_patch = may_patch
        self.metrics = metrics
        self.backoff_seconds = tuple(backoff_seconds)
        self._entries: dict[Key, _Entry] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def pending_keys(self) -> list[Key]:
        """What is queued, in order."""
        return list(self._entries)

    def attempts(self) -> Mapping[Key, int]:
        return {key: entry.attempts for key, entry in self._entries.items()}

    def add(self, key: Key) -> None:
        """Queue ``key`` (due now); one already queued keeps its backoff."""
        self._entries.setdefault(key, _Entry(self.clock()))

    def discard(self, key: Key) -> None:
        """Forget ``key`` (its target is enabled again: the cycle manages it)."""
        self._entries.pop(key, None)

    def _delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=self.backoff_seconds[min(attempts, len(self.backoff_seconds)) - 1])

    async def run_due(self, *, force: bool = False) -> None:
        """Restore every entry whose time has come (all with ``force``); failures wait for
        their next delay. Only while we may patch."""
        if not self._entries or not self.may_patch():
            return
        now = self.clock()
        for key, entry in list(self._entries.items()):
            if not force and entry.due > now:
                continue
            outcome = await restore_base(
                self.kube, key[0], key[1], may_patch=self.may_patch, now=now
            )
            if outcome == "not_leader":
                return
            if self.metrics is not None:
                self.metrics.count_restore(outcome)
            if outcome in _DONE:
                self._entries.pop(key, None)
                continue
            entry.attempts += 1
            entry.due = now + self._delay(entry.attempts)
            log.warning(
                "restore_retry_scheduled",
                target=f"{key[0]}/{key[1]}",
                attempt=entry.attempts,
                retry_in_seconds=self._delay(entry.attempts).total_seconds(),
            )


class OrphanSweep:
    """Finds managed HPAs with no enabled target and queues them, once per request (start,
    each reload); a failed list is tried again with backoff."""

    def __init__(
        self,
        kube: HpaLister,
        queue: RestoreQueue,
        *,
        clock: Clock,
        cache: HpaCache | None = None,
        backoff_seconds: Sequence[float] = RESTORE_BACKOFF_SECONDS,
    ) -> None:
        self.kube = kube
        self.cache = cache
        """A cluster-wide informer's cache, read instead of listing once it has synced."""
        self.queue = queue
        self.clock = clock
        self.backoff_seconds = tuple(backoff_seconds) or RESTORE_BACKOFF_SECONDS
        self._config: Config | None = None
        self._owns: Callable[[str, str], bool] = lambda _namespace, _name: True
        self._namespaces: set[str] = set()
        """Every namespace a configuration named: where to list when a cluster-wide list is
        refused (a removed target's namespace stays here)."""
        self._due: datetime | None = None
        self._requested_at: datetime | None = None
        self._failures = 0

    @property
    def pending(self) -> bool:
        return self._due is not None

    def request(self, config: Config, owns: Callable[[str, str], bool]) -> None:
        """Sweep against ``config`` at the next :meth:`run_due`."""
        self._config, self._owns = config, owns
        self._namespaces |= {t.namespace for t in config.targets}
        self._due, self._failures = self.clock(), 0
        self._requested_at = self._due

    async def run_due(self) -> None:
        now = self.clock()
        if self._config is None or self._due is None or self._due > now:
            return
        namespaces = self._namespaces | {key[0] for key in self.queue.pending_keys()}
        cache = self.cache
        try:
            if cache is not None and cache.scopes == [None] and cache.synced:
                hpas = cache.snapshots()  # the informer already holds every HPA
            elif (
                cache is not None
                and cache.scopes == [None]
                and self._requested_at is not None
                and (now - self._requested_at).total_seconds() < CACHE_SYNC_GRACE_SECONDS
            ):
                return  # syncing: one list of every HPA is enough
            else:
                hpas = await list_hpas_visible(self.kube, namespaces)
        except KubeApiError as error:
            self._failures += 1
            delay = self.backoff_seconds[min(self._failures, len(self.backoff_seconds)) - 1]
            self._due = now + timedelta(seconds=delay)
            log.warning(
                "orphan_sweep_failed",
                status=error.status,
                error=str(error),
                retry_in_seconds=delay,
            )
            return
        orphans = find_orphans(hpas, self._config, self._owns)
        for key in orphans:
            self.queue.add(key)
        self._due, self._failures = None, 0
        log.info("orphans_swept", listed=len(hpas), orphans=len(orphans))
