"""Leader election on a ``coordination.k8s.io/v1`` Lease.

Only the elected replica patches HPAs. This module decides *who leads*; the Lease requests
themselves (read, create, resourceVersion-guarded replace) are :class:`LeaseApi` calls that
:class:`predictive_scaler.kube.KubeClient` makes. Time comes from the caller (``now``) or an
injected clock, so tests drive it with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from predictive_scaler.kube import utc_now
from predictive_scaler.values import ConflictError, KubeApiError, NotFoundError

__all__ = ["LeaderElector", "LeaseApi", "LeaseRecord"]


class LeaseApi(Protocol):
    """The Lease calls an elector makes (:class:`~predictive_scaler.kube.KubeClient` has them)."""

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]: ...


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware datetime")


def _rfc3339_micro(moment: datetime) -> str:
    """A Lease's MicroTime."""
    _require_aware(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The election record of a Lease's spec, as written by its holder. Compared whole: any
    change (a renewal moves ``renewTime``) shows the holder alive at the time we see it. The
    times stay text: they come from the holder's clock and are never compared with ours."""

    holder: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LeaseRecord:
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=_text_or_none(spec.get("acquireTime")),
            renew_time=_text_or_none(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return _rfc3339_micro(value) if isinstance(value, datetime) else str(value)


class LeaderElector:
    """Leader election on a ``coordination.k8s.io/v1`` Lease, one step per call.

    :meth:`try_acquire_or_renew` creates the Lease when absent, renews it while we hold it, and
    takes it over once the holder's record has stayed unchanged for its
    ``leaseDurationSeconds`` *on our own clock*. As client-go's leaderelection does, a candidate
    never compares the holder's ``renewTime`` (written by the holder's clock) with its own
    clock: it remembers the record it last saw and the local time it first saw it, so clock
    skew between replicas cannot hand over a live lease, nor delay taking a dead one. Every
    write is a resourceVersion-guarded create or replace, so of two racing electors exactly one
    wins; the other sees 409 and returns ``False``. The caller runs it every
    ``renew_period_seconds`` and passes ``now``.
    """

    def __init__(
        self,
        client: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration_seconds: int = 15,
        renew_period_seconds: float = 5,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not 0 < renew_period_seconds < lease_duration_seconds:
            raise ValueError("need 0 < renew_period_seconds < lease_duration_seconds")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration_seconds = lease_duration_seconds
        self.renew_period_seconds = renew_period_seconds
        self.clock = clock
        self._is_leader = False
        self._renewed_at: datetime | None = None
        self._observed: LeaseRecord | None = None
        """The election record we last saw (read or wrote)."""
        self._observed_at: datetime | None = None
        """Our clock when that record was first seen: the holder was alive then."""

    @property
    def is_leader(self) -> bool:
        """Whether the last attempt left us holding the Lease."""
        return self._is_leader

    def _observe(self, record: LeaseRecord, now: datetime) -> None:
        if record != self._observed:
            self._observed, self._observed_at = record, now

    def _spec(self, now: datetime, *, acquire: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": acquire,
            "renewTime": _rfc3339_micro(now),
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self, now: datetime | None = None) -> bool:
        """One election step. Returns whether we lead now. API errors other than 409 are
        raised (typed); we then stay leader only until the renew deadline (lease duration
        minus one renew period after the last successful renew) has passed."""
        now = now or self.clock()
        _require_aware(now)
        try:
            won = await self._step(now)
        except ConflictError:
            won = False
        except KubeApiError:
            deadline = timedelta(seconds=self.lease_duration_seconds - self.renew_period_seconds)
            if self._renewed_at is None or now >= self._renewed_at + deadline:
                self._is_leader = False
            raise
        self._is_leader = won
        if won:
            self._renewed_at = now
        return won

    async def _step(self, now: datetime) -> bool:
        try:
            lease = await self.client.read_lease(self.namespace, self.name)
        except NotFoundError:
            spec = self._spec(now, acquire=_rfc3339_micro(now), transitions=0)
            await self.client.create_lease(
                self.namespace,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec,
                },
            )
            self._observe(LeaseRecord.from_spec(spec), now)
            return True
        spec = lease.get("spec") or {}
        record = LeaseRecord.from_spec(spec)
        self._observe(record, now)
        if record.holder == self.identity:
            acquired = record.acquire_time or _rfc3339_micro(now)
            new_spec = self._spec(now, acquire=acquired, transitions=record.transitions)
        else:
            if record.holder and not self._observed_expired(record, now):
                return False  # held by someone else, who changed it within its lease duration
            transitions = record.transitions + (1 if record.holder else 0)
            new_spec = self._spec(now, acquire=_rfc3339_micro(now), transitions=transitions)
        await self.client.replace_lease(
            self.namespace, self.name, self._replacement(lease, new_spec)
        )
        self._observe(LeaseRecord.from_spec(new_spec), now)
        return True

    def _observed_expired(self, record: LeaseRecord, now: datetime) -> bool:
        """Whether ``record`` (just observed) has stood unchanged for its lease duration on
        our clock. A clock stepped back behind the observation counts as not expired."""
        assert self._observed_at is not None
        duration = record.lease_duration_seconds or self.lease_duration_seconds
        return now >= self._observed_at + timedelta(seconds=duration)

    def _replacement(self, lease: Mapping[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """The whole Lease for a resourceVersion-guarded replace: the new spec, and the
        labels and annotations it had (a replace drops what it does not carry)."""
        meta = lease.get("metadata") or {}
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": meta.get("resourceVersion"),
                **({"labels": meta["labels"]} if meta.get("labels") else {}),
                **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
            },
            "spec": spec,
        }

    async def release(self, now: datetime | None = None) -> None:
        """Give the Lease up at once (holder cleared) if we hold it, so a standby takes over
        without waiting for expiry. Losing a race here is fine: someone else holds it."""
        if not self._is_leader:
            return
        now = now or self.clock()
        self._is_leader = False
        self._renewed_at = None
        try:
            lease = await self.client.read_lease(self.namespace, self.name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            released = {
                "leaseDurationSeconds": 1,
                "renewTime": _rfc3339_micro(now),
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            }
            await self.client.replace_lease(
                self.namespace, self.name, self._replacement(lease, released)
            )
        except (ConflictError, NotFoundError):
            return
