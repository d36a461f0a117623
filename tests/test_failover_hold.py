"""A new leader's missing-data hold counts from what the old leader acted on, not from the
clocks it kept while it only followed (found by the chaos soak, issue 10 item 12).

A follower decides every cycle too (hot standby) and keeps its own decision clocks. When
its own data was bad while the leader's was good (its Prometheus unreachable, or a failed
batch that left its fresh buffer empty), its clock says "no usable data for a long time".
The leader dies; the outage now reaches everyone. Were the follower to keep its own clock,
it would end the hold at once and lower minReplicas minutes after the data the cluster acted
on went missing, not ``missingDataHold`` after.

Two controllers on one fake clock against the API double, each with its own Prometheus front
(the follower's answers 503 throughout); the real client, the real Lease.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes_asyncio import client

from predictive_scaler.annotations import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
)
from predictive_scaler.config import parse_config
from predictive_scaler.kube import KubeClient
from predictive_scaler.leader import LeaderElector
from predictive_scaler.runtime import Controller
from tests.chaos import PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_hpa
from tests.support import FakeClock
from tests.test_faults_kube import CONFIG, NS, flat_demand, inline

STEP = 300.0  # the shared defaults' interval and step; missingDataHold is 30 minutes
HOLD = 1800.0


def min_replicas(kube_server: KubeDouble) -> int:
    stored = kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "nim")
    assert stored is not None
    return int(stored["spec"]["minReplicas"])


async def test_a_new_leader_holds_from_the_old_leaders_clocks_not_its_own_follower_ones(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    assert f"missingDataHold: {int(HOLD // 60)}m" in CONFIG
    kube_server.put_object(
        make_hpa(
            NS,
            "nim",
            3,
            10,
            annotations={ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "3"},
        )
    )
    clock = FakeClock(datetime(2025, 3, 3, 12, 0, 30, tzinfo=UTC))
    config = parse_config(CONFIG)

    def controller(identity: str, url: str) -> Controller:
        kube = KubeClient(kube_api, reporting_instance=identity)
        elector = LeaderElector(kube, "ops", "predictive-scaler", identity, clock=clock)
        made = Controller(kube, prometheus_url=url, clock=clock, elector=elector, fit_runner=inline)
        made.apply_config(config)
        return made

    async with (
        PrometheusFaultProxy(series=flat_demand) as good,
        PrometheusFaultProxy(series=flat_demand) as unreachable,
    ):
        unreachable.set_fault("5xx")
        leader = controller("a", good.url)
        follower = controller("b", unreachable.url)
        try:
            # The leader's data is good (3 pods' worth: it keeps 3); the follower's is not.
            rounds = int(HOLD // STEP) - 1
            for _ in range(rounds):
                assert await leader.renew_leadership()
                assert not await follower.renew_leadership()
                [led] = await leader.run_due()
                [followed] = await follower.run_due()
                assert led.signals[0].data_ok and led.recommended == 3, led
                assert not followed.signals[0].data_ok, followed
                clock.advance(STEP)
            assert min_replicas(kube_server) == 3

            # The leader dies without releasing; the outage now reaches everyone (the good
            # front fails too, though no one asks it any more). From the cluster's view the
            # data went missing now.
            await leader.aclose()
            good.set_fault("5xx")
            missing_since = clock().timestamp()
            assert await follower.renew_leadership()
            for _ in range(3):
                [report] = await follower.run_due()
                held = clock().timestamp() - missing_since
                assert not report.signals[0].data_ok, report
                assert min_replicas(kube_server) == 3, (
                    f"the new leader lowered 3 -> {min_replicas(kube_server)} after {held:.0f}s "
                    f"of missing data as leader (missingDataHold {HOLD:.0f}s; the old leader's "
                    f"data was good until then): {report.reason}: {report.message}"
                )
                clock.advance(STEP)
                assert await follower.renew_leadership()
        finally:
            await leader.aclose()
            await follower.aclose()


async def test_a_hold_that_ended_while_following_does_not_end_the_next_one_early(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    # Found by the chaos soak (round 138 of seed 7: 46 targets lowered in the first cycle of
    # a new bad run). The leader's data goes bad: it holds, and stores when the hold began.
    # Another replica takes the lease for a while without deciding (it cannot, or it has
    # just started); meanwhile our data comes back, but as a follower we write nothing, so
    # the stored hold clock still says "bad since" the old run. We lead again and the data
    # goes bad again: a new run, whose hold must count from now, not from the old run.
    kube_server.put_object(
        make_hpa(
            NS,
            "nim",
            3,
            10,
            annotations={ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "3"},
        )
    )
    clock = FakeClock(datetime(2025, 3, 3, 12, 0, 30, tzinfo=UTC))
    kube = KubeClient(kube_api, reporting_instance="a")
    elector = LeaderElector(kube, "ops", "predictive-scaler", "a", clock=clock)
    intruder = LeaderElector(kube, "ops", "predictive-scaler", "intruder", clock=clock)
    async with PrometheusFaultProxy(series=flat_demand) as prometheus:
        made = Controller(
            kube, prometheus_url=prometheus.url, clock=clock, elector=elector, fit_runner=inline
        )
        made.apply_config(parse_config(CONFIG))
        try:
            assert await made.renew_leadership()
            [report] = await made.run_due()
            assert report.recommended == 3 and report.signals[0].data_ok, report
            prometheus.set_fault("5xx")
            for _ in range(2):  # a short bad run, held; its start is stored
                clock.advance(STEP)
                assert await made.renew_leadership()
                [report] = await made.run_due()
                assert not report.signals[0].data_ok and min_replicas(kube_server) == 3
            # The lease goes to another replica (ours lapsed); the data comes back.
            await intruder.try_acquire_or_renew(clock())
            clock.advance(16)
            assert await intruder.try_acquire_or_renew(clock())
            prometheus.set_fault(None)
            for _ in range(int(HOLD // STEP)):
                clock.advance(STEP)
                assert await intruder.try_acquire_or_renew(clock())
                assert not await made.renew_leadership()
                [report] = await made.run_due()
                assert report.signals[0].data_ok and report.recommended == 3, report
            await intruder.release(clock())
            # We lead again, and the data goes missing again: a new bad run starts now.
            prometheus.set_fault("5xx")
            missing_since = clock().timestamp() + STEP
            for _ in range(3):
                clock.advance(STEP)
                assert await made.renew_leadership()
                [report] = await made.run_due()
                held = clock().timestamp() - missing_since
                assert not report.signals[0].data_ok, report
                assert min_replicas(kube_server) == 3, (
                    f"lowered 3 -> {min_replicas(kube_server)} after {held:.0f}s of missing "
                    f"data (missingDataHold {HOLD:.0f}s; the data was good until then): "
                    f"{report.reason}: {report.message}"
                )
        finally:
            await made.aclose()
