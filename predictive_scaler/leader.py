"""Leader election on a ``coordination.k8s.io/v1`` Lease.

Only the elected replica patches HPAs. This module decides *who leads*; the Lease requests
themselves (read, create, resourceVersion-guarded replace) are :class:`LeaseApi` calls that
:class:`predictive_scaler.kube.KubeClient` makes. Time comes from the caller (``now``) or an
injected clock, so tests drive it with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from predictive_scaler.kube import ConflictError, KubeApiError, NotFoundError, utc_now

__all__ = ["LeaderElector", "LeaseApi"]


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


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class LeaderElector:
    """Leader election on a ``coordination.k8s.io/v1`` Lease, one step per call.

    :meth:`try_acquire_or_renew` creates the Lease when absent, renews it while we hold it, and
    takes it over when the holder's ``renewTime + leaseDurationSeconds`` has passed. Every
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

    @property
    def is_leader(self) -> bool:
        """Whether the last attempt left us holding the Lease."""
        return self._is_leader

    def _spec(self, now: datetime, *, acquire: datetime, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": _rfc3339_micro(acquire),
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
            await self.client.create_lease(
                self.namespace,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, acquire=now, transitions=0),
                },
            )
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquired = _parse_time(spec.get("acquireTime")) or now
            new_spec = self._spec(now, acquire=acquired, transitions=transitions)
        else:
            renewed = _parse_time(spec.get("renewTime"))
            duration = int(spec.get("leaseDurationSeconds") or self.lease_duration_seconds)
            if holder and renewed is not None and renewed + timedelta(seconds=duration) >= now:
                return False  # held by someone else and not expired
            new_spec = self._spec(now, acquire=now, transitions=transitions + (1 if holder else 0))
        await self.client.replace_lease(
            self.namespace, self.name, self._replacement(lease, new_spec)
        )
        return True

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
