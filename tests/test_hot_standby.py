"""Hot standby: a follower keeps its data and fits warm, so when it wins the Lease its very
next cycle decides, and patches, from a fitted model (issue 10 item 8).

Two controllers against the API server double and a real Prometheus, on one fake clock: the
leader patches, the follower runs the same cycles and never writes; the leader dies (no
release), the demand rises, the follower takes the Lease and must raise within one cycle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.kube import KubeClient
from predictive_scaler.leader import LeaderElector
from predictive_scaler.reconcile import CycleReport
from predictive_scaler.runtime import Controller
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock, config_yaml

STEP = 300.0
DATA_END = math.floor(time.time() / STEP) * STEP - STEP
RISE = DATA_END - 6 * STEP
"""From here on the two pods are at 0.9 each (1.8: 3 pods at 0.7); before, at 0.3 (1 pod)."""
NS = "rises"

CONFIG = config_yaml(
    """\
targets:
  - hpa: {namespace: rises, name: nim}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{${matchers}})'
        hpaMetric: gpu_cache_usage_perc
"""
).replace("refitInterval: 1h", "refitInterval: 1d")
"""A refit interval longer than the test, so no refit falls due on schedule in it: a fit in
the new leader's first cycle could only be a cold start's."""

_T = TypeVar("_T")


def rising_series() -> list[Series]:
    ts = np.arange(DATA_END - 86400, DATA_END + 1, STEP)
    values = np.where(ts < RISE, 0.3, 0.9)
    return [
        ("gpu_cache_usage_perc", {"namespace": NS, "pod": pod}, ts, values)
        for pod in ("nim-0", "nim-1")
    ]


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(rising_series())


class CountingFits:
    """A fit runner that fits in a thread and counts the fits it ran."""

    def __init__(self) -> None:
        self.fits = 0

    async def __call__(self, fit: Callable[[], _T]) -> _T:
        import asyncio

        result = await asyncio.to_thread(fit)
        self.fits += 1
        return result


def min_replicas(kube_server: KubeDouble) -> int:
    stored = kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "nim")
    assert stored is not None
    return int(stored["spec"]["minReplicas"])


async def test_a_follower_that_wins_patches_within_one_cycle_from_its_warm_model(
    kube_server: KubeDouble, kube_api: client.ApiClient, prometheus: PrometheusServer
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    clock = FakeClock(datetime.fromtimestamp(RISE - 4 * STEP + 60, UTC))
    config = parse_config(CONFIG)

    def controller(identity: str, fits: CountingFits) -> Controller:
        kube = KubeClient(kube_api, reporting_instance=identity)
        elector = LeaderElector(kube, "ops", "predictive-scaler", identity, clock=clock)
        made = Controller(
            kube, prometheus_url=prometheus.url, clock=clock, elector=elector, fit_runner=fits
        )
        made.apply_config(config)
        return made

    leader_fits, follower_fits = CountingFits(), CountingFits()
    leader = controller("a", leader_fits)
    follower = controller("b", follower_fits)
    try:
        assert await leader.renew_leadership()
        assert not await follower.renew_leadership()
        # Before the rise: both decide every cycle (1 pod's worth); only the leader may write.
        for _ in range(3):
            [led] = await leader.run_due()
            [followed] = await follower.run_due()
            assert led.recommended == 1 and followed.recommended == 1
            assert followed.patch_result in (None, "dry_run"), followed
            clock.advance(STEP)
            assert await leader.renew_leadership()
            assert not await follower.renew_leadership()
        assert follower_fits.fits >= 1, "the follower never fitted while following"
        assert min_replicas(kube_server) == 1

        # The leader dies (no release); the demand rises; the follower takes over when the
        # Lease it last saw renewed has expired, and its very next cycle raises.
        await leader.aclose()
        clock.advance(STEP)  # past RISE, and past the lease duration
        assert clock.now.timestamp() >= RISE
        assert await follower.renew_leadership()
        fits_before = follower_fits.fits
        reports: list[CycleReport] = await follower.run_due()
        assert len(reports) == 1, reports
        [report] = reports
        assert report.patch_result == "applied", (
            f"the new leader did not patch in its first cycle: {report.patch_result!r}, "
            f"recommended {report.recommended}, signals {report.signals}"
        )
        assert report.recommended is not None and report.recommended >= 3, report
        assert min_replicas(kube_server) == report.recommended
        [signal] = report.signals
        assert signal.problem is None and signal.model is not None, signal
        # Decided on the model fitted while following, not a cold start's fit in this cycle.
        assert follower_fits.fits == fits_before, "the first cycle as leader had to fit"
    finally:
        await leader.aclose()
        await follower.aclose()


async def test_a_write_the_follower_held_back_is_made_when_it_wins_not_an_interval_later(
    kube_server: KubeDouble, kube_api: client.ApiClient, prometheus: PrometheusServer
) -> None:
    """The follower's last cycle saw the rise and would have raised; the leader died before
    its own cycle. The follower wins the Lease mid-interval: its held-back raise is decided
    again and made at once, so the failover's first patch comes with the Lease, not up to a
    whole interval after it."""
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    clock = FakeClock(datetime.fromtimestamp(RISE - 2 * STEP + 60, UTC))
    config = parse_config(CONFIG)

    def controller(identity: str) -> tuple[Controller, LeaderElector]:
        kube = KubeClient(kube_api, reporting_instance=identity)
        elector = LeaderElector(kube, "ops", "predictive-scaler", identity, clock=clock)
        made = Controller(kube, prometheus_url=prometheus.url, clock=clock, elector=elector)
        made.apply_config(config)
        return made, elector

    leader, _ = controller("a")
    follower, elector = controller("b")
    try:
        for _ in range(2):  # before the rise
            assert await leader.renew_leadership()
            assert not await follower.renew_leadership()
            [led] = await leader.run_due()
            [followed] = await follower.run_due()
            assert led.recommended == followed.recommended == 1
            clock.advance(STEP)
        # After the rise: the follower's cycle comes first and holds its raise back; the
        # leader dies before its own.
        assert await leader.renew_leadership()
        assert not await follower.renew_leadership()
        [held] = await follower.run_due()
        assert (held.recommended, held.patch_result) == (3, "dry_run"), held
        await leader.aclose()
        assert min_replicas(kube_server) == 1

        clock.advance(elector.lease_duration_seconds + 5)  # the Lease has expired
        assert await follower.renew_leadership()
        reports = await follower.run_due()
        assert [r.patch_result for r in reports] == ["applied"], (
            "the raise held back as follower waits for the next interval"
        )
        assert min_replicas(kube_server) == 3
    finally:
        await leader.aclose()
        await follower.aclose()
