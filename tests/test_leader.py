"""Leader election (predictive_scaler.leader) against the API server double, through the real
kubernetes_asyncio client, with time passed in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes_asyncio import client

from predictive_scaler.kube import KubeApiError, KubeClient
from predictive_scaler.leader import LeaderElector
from tests.kube_double import KubeDouble

NS = "inference"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, request_timeout_seconds=5, reporting_instance="pod-a")


def _elector(kube: KubeClient, identity: str) -> LeaderElector:
    return LeaderElector(kube, NS, "predictive-scaler", identity, lease_duration_seconds=15,
                         renew_period_seconds=5)  # fmt: skip


def _lease(server: KubeDouble) -> dict[str, object]:
    lease = server.get_object("coordination.k8s.io/v1", "Lease", NS, "predictive-scaler")
    assert lease is not None
    return lease["spec"]  # type: ignore[no-any-return]


async def test_two_electors_only_one_wins_then_takeover_after_expiry(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    a, b = _elector(kube, "pod-a"), _elector(kube, "pod-b")

    results = await asyncio.gather(a.try_acquire_or_renew(T0), b.try_acquire_or_renew(T0))
    assert sorted(results) == [False, True]
    leader, standby = (a, b) if results[0] else (b, a)
    assert leader.is_leader and not standby.is_leader
    assert _lease(kube_server)["holderIdentity"] == leader.identity

    # renewals keep it; the standby, which saw the renewal at +6 s, cannot take it before
    # 15 s of its own clock have passed since
    assert await leader.try_acquire_or_renew(T0 + timedelta(seconds=5))
    assert not await standby.try_acquire_or_renew(T0 + timedelta(seconds=6))
    assert not await standby.try_acquire_or_renew(T0 + timedelta(seconds=20))
    assert _lease(kube_server)["renewTime"] == "2025-03-01T12:00:05.000000Z"

    # the leader stops renewing: 15 s after the standby last saw a change, it takes over
    assert await standby.try_acquire_or_renew(T0 + timedelta(seconds=21))
    spec = _lease(kube_server)
    assert spec["holderIdentity"] == standby.identity and spec["leaseTransitions"] == 1
    assert not await leader.try_acquire_or_renew(T0 + timedelta(seconds=22))
    assert standby.is_leader and not leader.is_leader


async def test_racing_takeovers_of_an_expired_lease_have_one_winner(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    old = _elector(kube, "pod-old")
    assert await old.try_acquire_or_renew(T0)
    b, c = _elector(kube, "pod-b"), _elector(kube, "pod-c")
    # both see the old holder's record first; it never changes again
    assert not await b.try_acquire_or_renew(T0 + timedelta(seconds=1))
    assert not await c.try_acquire_or_renew(T0 + timedelta(seconds=1))
    later = T0 + timedelta(seconds=60)
    results = await asyncio.gather(b.try_acquire_or_renew(later), c.try_acquire_or_renew(later))
    assert sorted(results) == [False, True]
    assert [e.identity for e in (b, c) if e.is_leader] == [_lease(kube_server)["holderIdentity"]]


async def test_release_lets_a_standby_in_at_once(kube_server: KubeDouble, kube: KubeClient) -> None:
    a, b = _elector(kube, "pod-a"), _elector(kube, "pod-b")
    assert await a.try_acquire_or_renew(T0)
    await a.release(T0 + timedelta(seconds=1))
    assert not a.is_leader
    assert await b.try_acquire_or_renew(T0 + timedelta(seconds=2))
    await a.release()  # not leader: nothing to do


async def test_leader_keeps_lead_through_api_errors_until_renew_deadline(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    a = _elector(kube, "pod-a")
    assert await a.try_acquire_or_renew(T0)
    kube_server.fail_next("*", "/leases/", 500, times=2)
    with pytest.raises(KubeApiError):
        await a.try_acquire_or_renew(T0 + timedelta(seconds=5))
    assert a.is_leader  # 5 s < 15 s - 5 s
    with pytest.raises(KubeApiError):
        await a.try_acquire_or_renew(T0 + timedelta(seconds=10))
    assert not a.is_leader


async def test_a_candidate_whose_clock_is_ahead_never_takes_a_live_lease(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    """The finding: a candidate 16 s ahead took a live lease 1 s after it was renewed. A
    candidate judges expiry only by its own clock since it last *observed* the record change
    (client-go's rule), never by the holder's renewTime."""
    skew = timedelta(seconds=16)
    leader, ahead = _elector(kube, "pod-a"), _elector(kube, "pod-b")
    assert await leader.try_acquire_or_renew(T0)
    for renewed in range(5, 61, 5):  # the holder renews every 5 s on its own clock
        assert await leader.try_acquire_or_renew(T0 + timedelta(seconds=renewed))
        one_second_later = T0 + timedelta(seconds=renewed + 1) + skew
        assert not await ahead.try_acquire_or_renew(one_second_later), (
            f"took a live lease {1} s after its renewal at +{renewed} s"
        )
        assert _lease(kube_server)["holderIdentity"] == "pod-a"
    # The holder stops at +60 s. The candidate last saw a change at +61 s (its clock +77 s):
    # it waits the lease duration on its own clock, then takes over.
    assert not await ahead.try_acquire_or_renew(T0 + timedelta(seconds=61 + 14) + skew)
    assert await ahead.try_acquire_or_renew(T0 + timedelta(seconds=61 + 15) + skew)
    assert _lease(kube_server)["holderIdentity"] == "pod-b"


async def test_a_candidate_whose_clock_is_behind_takes_a_dead_lease_on_time(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    """The other way round: a candidate an hour behind must not wait an hour more."""
    behind = timedelta(hours=1)
    dead, candidate = _elector(kube, "pod-a"), _elector(kube, "pod-b")
    assert await dead.try_acquire_or_renew(T0)
    assert not await candidate.try_acquire_or_renew(T0 + timedelta(seconds=1) - behind)
    assert not await candidate.try_acquire_or_renew(T0 + timedelta(seconds=15) - behind)
    assert await candidate.try_acquire_or_renew(T0 + timedelta(seconds=16) - behind)
