"""The loop's dispatcher (issue 10 items 1 and 3): cycles off the work queue, each on its own.

The finding: one global pass with a barrier. Every target waited for the slowest, and
``/healthz`` ticked only between passes, so one hung target (a Prometheus that accepts and
never answers, a long cold start) stopped every other target and got the pod killed by its
own liveness probe.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from predictive_scaler.dispatch import STALL_GRACE_SECONDS, Dispatcher, TargetKey
from predictive_scaler.reconcile import CycleReport
from predictive_scaler.runtime import Controller
from tests.kube_double import KubeDouble, make_configmap, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import FakeClock, eventually, run_options, running_controller
from tests.test_reconcile import CONFIG, DATA_END, flat_series

T0 = datetime(2026, 12, 7, tzinfo=UTC)
TWO_TARGETS = CONFIG.split("  - hpa: {namespace: halved")[0]


def report(key: TargetKey, at: datetime) -> CycleReport:
    return CycleReport(f"{key[0]}/{key[1]}", key[0], key[1], at, ())


class Cycles:
    """A run_cycle that records its calls; keys in ``hang`` never finish on their own."""

    def __init__(self, clock: FakeClock, hang: set[TargetKey] | None = None) -> None:
        self.clock = clock
        self.hang = hang or set()
        self.runs: dict[TargetKey, int] = {}
        self.running: set[TargetKey] = set()
        self.overlaps = 0
        self.peak = 0

    async def __call__(self, key: TargetKey) -> CycleReport | None:
        if key in self.running:
            self.overlaps += 1
        self.running.add(key)
        self.peak = max(self.peak, len(self.running))
        try:
            self.runs[key] = self.runs.get(key, 0) + 1
            if key in self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(0.001)
            return report(key, self.clock())
        finally:
            self.running.discard(key)


async def test_a_hung_cycle_delays_only_its_own_target() -> None:
    clock = FakeClock(T0)
    cycles = Cycles(clock, hang={("ns", "slow")})
    dispatcher = Dispatcher(cycles, lambda _key: 30.0, clock=clock)
    for name in ("slow", "a", "b"):
        dispatcher.schedule(("ns", name), T0)
    ticks: list[datetime] = []
    stop = asyncio.Event()

    async def sleeper(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0.002)

    serving = asyncio.create_task(dispatcher.serve(stop, sleeper, lambda: ticks.append(clock())))
    try:
        await eventually(lambda: min(cycles.runs.get(("ns", k), 0) for k in "ab") >= 5, 10)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 5)
    assert cycles.runs[("ns", "slow")] == 1  # never started twice while it hangs
    assert cycles.overlaps == 0
    assert len(ticks) > 5  # the heartbeat went on while the slow cycle hung


async def test_a_cycle_past_its_deadline_is_cancelled_and_its_target_requeued() -> None:
    clock = FakeClock(T0)
    cycles = Cycles(clock, hang={("ns", "slow")})
    late: list[TargetKey] = []
    dispatcher = Dispatcher(
        cycles, lambda _key: 30.0, clock=clock, deadline_seconds=0.05, on_deadline=late.append
    )
    dispatcher.schedule(("ns", "slow"), T0)
    assert await asyncio.wait_for(dispatcher.run_due(), 5) == []
    assert late == [("ns", "slow")] and dispatcher.deadlines_exceeded == 1
    assert dispatcher.queue.due_time(("ns", "slow")) == T0 + timedelta(seconds=30)
    assert not dispatcher.busy()


async def test_concurrency_is_bounded_and_waves_bound_the_prefetch() -> None:
    clock = FakeClock(T0)
    cycles = Cycles(clock)
    waves: list[int] = []

    async def prefetch(keys: object, _now: datetime) -> None:
        assert isinstance(keys, list)
        waves.append(len(keys))

    dispatcher = Dispatcher(
        cycles, lambda _key: 30.0, clock=clock, prefetch=prefetch, max_concurrency=7
    )
    for i in range(450):
        dispatcher.schedule(("ns", str(i)), T0)
    reports = await asyncio.wait_for(dispatcher.run_due(), 20)
    assert len(reports) == 450
    assert waves == [200, 200, 50]
    assert cycles.peak <= 7
    assert dispatcher.queue.next_due() == T0 + timedelta(seconds=30)


async def test_a_removed_target_is_not_run_again() -> None:
    clock = FakeClock(T0)
    intervals: dict[TargetKey, float] = {("ns", "a"): 30.0}
    cycles = Cycles(clock)
    dispatcher = Dispatcher(cycles, intervals.get, clock=clock)
    dispatcher.schedule(("ns", "a"), T0)
    await dispatcher.run_due()
    dispatcher.discard(("ns", "a"))
    del intervals[("ns", "a")]
    clock.advance(60)
    assert await dispatcher.run_due() == []
    assert cycles.runs == {("ns", "a"): 1}


async def test_a_cycle_that_ignores_its_cancellation_fails_liveness() -> None:
    """Only a cycle stuck past its deadline (a blocking call) is a reason to restart: a slow
    one within its deadline is not."""
    clock = FakeClock(T0)
    mono = [1000.0]
    cycles = Cycles(clock, hang={("ns", "stuck")})
    dispatcher = Dispatcher(
        cycles, lambda _key: 30.0, clock=clock, deadline_seconds=600, monotonic=lambda: mono[0]
    )
    dispatcher.schedule(("ns", "stuck"), T0)
    dispatcher.start_due()
    await eventually(lambda: bool(cycles.running), 5)
    mono[0] += 600
    assert dispatcher.problem() is None  # slow, within its deadline
    mono[0] += STALL_GRACE_SECONDS + 1
    problem = dispatcher.problem()
    assert problem is not None and "ns/stuck" in problem and "deadline" in problem
    await dispatcher.aclose()


# ---------------------------------------------------------------- the whole process


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


async def test_run_keeps_deciding_and_ticking_while_one_target_hangs(
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run`` with two targets, one whose cycle never returns (as behind a Prometheus that
    accepts connections and never answers): the other goes on deciding every interval, and
    the heartbeat behind ``/healthz`` keeps ticking."""
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": TWO_TARGETS}))
    for namespace in ("busy", "idle"):
        kube_server.put_object(make_hpa(namespace, "nim", 1, 10))

    async def sleeper(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0.002)

    hung = asyncio.Event()

    async def hang() -> CycleReport:
        hung.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def on_started(controller: Controller) -> None:
        controller.reconcilers[("idle", "nim")].reconcile = hang  # type: ignore[method-assign]

    options = run_options(kube_server, prometheus.url, tmp_path, monkeypatch)
    async with running_controller(
        options, clock=clock, sleeper=sleeper, on_started=on_started
    ) as running:
        controller = running.controller
        await asyncio.wait_for(hung.wait(), 10)
        first = controller.health.last_tick
        assert first is not None

        interval = 300.0  # CONFIG's interval
        hung_at = clock.now
        try:
            await eventually(
                lambda: (
                    ("busy", "nim") in controller.last_reports
                    and (controller.last_reports[("busy", "nim")].at - hung_at).total_seconds()
                    >= 3 * interval
                ),
                10,
            )
        except TimeoutError:
            at = controller.last_reports.get(("busy", "nim"))
            raise AssertionError(
                f"busy/nim stopped deciding while idle/nim hung: last decided at "
                f"{at.at if at else None}, the clock at {clock.now}"
            ) from None
        last = controller.health.last_tick
        assert last is not None and last > first, "the heartbeat stopped while a cycle hung"
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{controller.metrics_port}/healthz"
            async with session.get(url) as response:
                assert response.status == 200, await response.text()
        assert await running.stop() == 0
