"""HPA informer: list + watch of ``autoscaling/v2`` HorizontalPodAutoscalers into a cache.

The loop's read path. One GET per target per cycle was 40 % of the event loop's time at 1,000
targets; a watch brings each change once instead. Per scope (one namespace, or ``None`` for
all of them) a task lists the HPAs, then watches from the list's resourceVersion, as
client-go's reflector does:

- a watch the server ends (its timeout) is resumed from the last resourceVersion seen;
- a 410 Gone (the version was compacted away) re-lists;
- any other failure backs off through ``backoff_seconds`` (the last delay repeats), marks the
  scope not synced (its cache may miss changes) and re-lists.

A scope is *synced* from its first successful list until its watch next fails. Readers
(:class:`CachedHpaApi`) take an HPA from the cache only while its scope is synced, and fall
back to a GET otherwise, so a broken watch or RBAC without ``list``/``watch`` costs reads,
never correctness. Writes stay resourceVersion-guarded: our own patch's answer goes into the
cache (the next cycle patches from the version it produced), and a 409 drops the entry so
the re-read is a GET.

The Kubernetes calls themselves are :class:`~predictive_scaler.kube.KubeClient`'s
(``list_hpas_versioned``, ``watch_hpas``); this module holds only the cache and its rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal, Protocol

from predictive_scaler.kube import DEFAULT_WATCH_BACKOFF_SECONDS, DEFAULT_WATCH_TIMEOUT_SECONDS
from predictive_scaler.logs import Logger, get_logger
from predictive_scaler.ports import HpaApi
from predictive_scaler.values import (
    ConflictError,
    HpaList,
    HpaSnapshot,
    HpaWatchEvent,
    KubeApiError,
    ObjectRef,
)

__all__ = [
    "ALL_NAMESPACES",
    "CachedHpaApi",
    "HpaInformer",
    "HpaWatchSource",
    "informer_scopes",
]

ALL_NAMESPACES: Final = None
"""The scope of a cluster-wide list + watch."""

Scope = str | None
Key = tuple[str, str]


class HpaWatchSource(Protocol):
    """What the informer needs of Kubernetes (met by :class:`~predictive_scaler.kube.
    KubeClient`)."""

    async def list_hpas_versioned(self, namespace: str | None = None) -> HpaList: ...

    def watch_hpas(
        self, namespace: str | None, resource_version: str, *, timeout_seconds: int = ...
    ) -> AsyncIterator[HpaWatchEvent]: ...


def informer_scopes(mode: str, namespaces: Iterable[str]) -> list[Scope] | None:
    """The scopes to watch for ``controller.hpaWatch``: ``cluster`` one all-namespaces watch,
    ``namespaces`` one per namespace that has a target (what a Role per namespace allows),
    ``off`` none (``None``: no informer, a GET per target per cycle)."""
    if mode == "off":
        return None
    if mode == "cluster":
        return [ALL_NAMESPACES]
    if mode == "namespaces":
        return [*sorted(set(namespaces))]
    raise ValueError(f"unknown hpaWatch mode {mode!r}")


def _newer(candidate: str, cached: str) -> bool:
    """Whether ``candidate`` may replace ``cached``. resourceVersions are opaque to clients,
    but every API server backed by etcd hands out increasing integers; where both parse,
    an older one (a watch event overtaken by our own patch's answer) is refused. Anything
    else is taken, as a plain informer would."""
    try:
        return int(candidate) >= int(cached)
    except ValueError:
        return True


@dataclass
class _ScopeState:
    synced: bool = False
    resource_version: str | None = None
    task: asyncio.Task[None] | None = None
    keys: set[Key] = field(default_factory=set)


class HpaInformer:
    """The cache of HPAs, kept by one list + watch task per scope.

    Call :meth:`set_scopes` (again on every configuration change; unchanged scopes keep
    their task and cache), read with :meth:`get`, and :meth:`aclose` at the end.
    """

    def __init__(
        self,
        source: HpaWatchSource,
        *,
        watch_timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECONDS,
        backoff_seconds: Sequence[float] = DEFAULT_WATCH_BACKOFF_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        logger: Logger | None = None,
    ) -> None:
        self.source = source
        self.watch_timeout_seconds = watch_timeout_seconds
        self.backoff_seconds = tuple(backoff_seconds) or (1.0,)
        self.sleep = sleep
        self.log = logger or get_logger(component="hpa-informer")
        self._scopes: dict[Scope, _ScopeState] = {}
        self._items: dict[Key, HpaSnapshot] = {}
        self._changed = asyncio.Condition()
        self.lists = 0
        """Successful lists so far (the first of each scope, then every re-list)."""
        self.watch_events = 0
        """Watch events applied to the cache."""

    # ------------------------------------------------------------------ scopes

    def set_scopes(self, scopes: Iterable[Scope]) -> None:
        """Watch exactly ``scopes`` (namespaces, or ``None`` for all). New ones start
        unsynced; dropped ones stop and their HPAs leave the cache."""
        wanted = list(dict.fromkeys(scopes))
        for scope in list(self._scopes):
            if scope not in wanted:
                state = self._scopes.pop(scope)
                if state.task is not None:
                    state.task.cancel()
                for key in state.keys:
                    self._items.pop(key, None)
        for scope in wanted:
            if scope not in self._scopes:
                state = _ScopeState()
                self._scopes[scope] = state
                state.task = asyncio.create_task(
                    self._run(scope, state), name=f"hpa-informer:{scope or '*'}"
                )

    @property
    def scopes(self) -> list[Scope]:
        return list(self._scopes)

    def _scope_of(self, namespace: str) -> _ScopeState | None:
        return self._scopes.get(namespace) or self._scopes.get(ALL_NAMESPACES)

    @property
    def synced(self) -> bool:
        """Every scope has listed and its watch has not failed since."""
        return bool(self._scopes) and all(s.synced for s in self._scopes.values())

    def synced_for(self, namespace: str) -> bool:
        state = self._scope_of(namespace)
        return state is not None and state.synced

    async def wait_synced(self, timeout_seconds: float = 30.0) -> None:
        """Until :attr:`synced` (``TimeoutError`` after ``timeout_seconds``)."""
        async with asyncio.timeout(timeout_seconds), self._changed:
            await self._changed.wait_for(lambda: self.synced)

    # ------------------------------------------------------------------ the cache

    def get(self, namespace: str, name: str) -> HpaSnapshot | None:
        """The cached HPA; ``None`` when its scope is not synced or the cache lacks it."""
        if not self.synced_for(namespace):
            return None
        return self._items.get((namespace, name))

    def snapshots(self) -> list[HpaSnapshot]:
        """Every cached HPA of the synced scopes (e.g. to find the HPAs we manage)."""
        return [
            snapshot
            for (namespace, _), snapshot in sorted(self._items.items())
            if self.synced_for(namespace)
        ]

    def observe(self, snapshot: HpaSnapshot) -> None:
        """Take a state read or written outside the watch (a GET, our own patch's answer),
        unless the cache already holds a newer one."""
        state = self._scope_of(snapshot.namespace)
        if state is None:
            return
        self._put(state, snapshot)

    def forget(self, namespace: str, name: str) -> None:
        """Drop an entry known to be stale (a 409 on it): the next read is a GET."""
        self._items.pop((namespace, name), None)

    def _put(self, state: _ScopeState, snapshot: HpaSnapshot) -> None:
        key = (snapshot.namespace, snapshot.name)
        cached = self._items.get(key)
        if cached is not None and not _newer(snapshot.resource_version, cached.resource_version):
            return
        self._items[key] = snapshot
        state.keys.add(key)

    def _apply(self, state: _ScopeState, event: HpaWatchEvent) -> None:
        state.resource_version = event.resource_version or state.resource_version
        snapshot = event.snapshot
        if snapshot is None:  # BOOKMARK: only the resourceVersion moves on
            return
        self.watch_events += 1
        if event.event_type == "DELETED":
            key = (snapshot.namespace, snapshot.name)
            self._items.pop(key, None)
            state.keys.discard(key)
        else:
            self._put(state, snapshot)

    def _replace(self, state: _ScopeState, listed: HpaList) -> None:
        fresh = {(s.namespace, s.name): s for s in listed.items}
        for key in state.keys - fresh.keys():
            self._items.pop(key, None)
        state.keys = set(fresh)
        for snapshot in listed.items:
            self._put(state, snapshot)
        state.resource_version = listed.resource_version

    # ------------------------------------------------------------------ list + watch

    async def _set_synced(self, scope: Scope, state: _ScopeState, synced: bool) -> None:
        if state.synced == synced:
            return
        state.synced = synced
        if synced:
            self.log.info("hpa_cache_synced", scope=scope or "*", hpas=len(state.keys))
        async with self._changed:
            self._changed.notify_all()

    async def _run(self, scope: Scope, state: _ScopeState) -> None:
        failures = 0
        while True:
            try:
                if state.resource_version is None:
                    listed = await self.source.list_hpas_versioned(scope)
                    self.lists += 1
                    self._replace(state, listed)
                    await self._set_synced(scope, state, True)
                assert state.resource_version is not None
                started, received = time.monotonic(), 0
                async for event in self.source.watch_hpas(
                    scope, state.resource_version, timeout_seconds=self.watch_timeout_seconds
                ):
                    self._apply(state, event)
                    failures, received = 0, received + 1
                # The server ended the watch (its timeout): resume from where it stopped,
                # after a pause if it ended at once without news (do not spin on the server).
                if received == 0 and time.monotonic() - started < 1.0:
                    quiet = min(failures + 1, len(self.backoff_seconds))
                    await self.sleep(self.backoff_seconds[quiet - 1])
            except asyncio.CancelledError:
                raise
            except KubeApiError as error:
                if error.status == 410:
                    # Compacted away: the cache may have missed events; list again at once.
                    self.log.info("hpa_watch_expired", scope=scope or "*", error=str(error))
                    await self._set_synced(scope, state, False)
                    state.resource_version = None
                    continue
                failures += 1
                await self._failed(scope, state, error, failures)
            except Exception as error:  # a bug must not end the cache: log, back off, re-list
                failures += 1
                self.log.exception("hpa_watch_crashed", scope=scope or "*", error=str(error))
                await self._failed(scope, state, KubeApiError(0, str(error)), failures)

    async def _failed(
        self, scope: Scope, state: _ScopeState, error: KubeApiError, failures: int
    ) -> None:
        """Mark the scope unsynced (readers GET meanwhile), back off, and list again."""
        await self._set_synced(scope, state, False)
        state.resource_version = None
        delay = self.backoff_seconds[min(failures, len(self.backoff_seconds)) - 1]
        if error.retry_after_seconds is not None:
            delay = max(delay, error.retry_after_seconds)
        self.log.warning(
            "hpa_watch_failed",
            scope=scope or "*",
            status=error.status,
            error=str(error),
            retry_in_seconds=delay,
            forbidden=error.status in {401, 403},
        )
        await self.sleep(delay)

    async def aclose(self) -> None:
        """Stop every task; safe to call twice."""
        states = list(self._scopes.values())
        self._scopes.clear()
        self._items.clear()
        for state in states:
            if state.task is not None:
                state.task.cancel()
        for state in states:
            if state.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await state.task


class CachedHpaApi:
    """``reconcile.HpaApi`` over an informer: reads come from the cache while it is synced
    and holds the HPA, else from a GET (whose answer the cache takes); patches go to the API
    and their answers into the cache; a 409 drops the entry, so the re-read is a GET."""

    def __init__(self, api: HpaApi, informer: HpaInformer) -> None:
        self.api = api
        self.informer = informer
        self.cache_reads = 0
        """Reads answered from the cache."""
        self.api_reads = 0
        """Reads that fell back to a GET."""

    async def read_hpa(self, namespace: str, name: str) -> HpaSnapshot:
        cached = self.informer.get(namespace, name)
        if cached is not None:
            self.cache_reads += 1
            return cached
        self.api_reads += 1
        snapshot = await self.api.read_hpa(namespace, name)
        self.informer.observe(snapshot)
        return snapshot

    async def patch_hpa_min_replicas(
        self, snapshot: HpaSnapshot, min_replicas: int, annotations: Mapping[str, str | None]
    ) -> HpaSnapshot:
        try:
            patched = await self.api.patch_hpa_min_replicas(snapshot, min_replicas, annotations)
        except ConflictError:
            self.informer.forget(snapshot.namespace, snapshot.name)
            raise
        self.informer.observe(patched)
        return patched

    async def create_event(
        self,
        involved: HpaSnapshot | ObjectRef,
        reason: str,
        message: str,
        *,
        now: datetime,
        type_: Literal["Normal", "Warning"] = "Normal",
    ) -> str:
        return await self.api.create_event(involved, reason, message, now=now, type_=type_)

    async def read_scale_selector(self, namespace: str, ref: Mapping[str, str]) -> str | None:
        """Passed through (the reconciler finds its pods with it when the client has it)."""
        reader = getattr(self.api, "read_scale_selector", None)
        if reader is None:
            return None
        selector: str | None = await reader(namespace, ref)
        return selector
