"""State that survives restarts (issue 10 item 9): the missing-data hold clock and what the
scale-down delay needs are kept in the HPA's ``predictive-scaler.io/state`` annotation, so a
new process (a new Controller) continues the old one's clocks instead of starting them again.

Driven through the real Prometheus adapter against a fault-injecting Prometheus API, the real
Kubernetes client against the API double, and a fake clock; every cycle is bounded by a
timeout. Missing, garbage or future state only ever makes a hold or a delay end later.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import structlog
from kubernetes_asyncio import client

from predictive_scaler.annotations import ANNOTATION_STATE, MANAGED_ANNOTATIONS
from predictive_scaler.config import parse_config
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    KubeClient,
)
from predictive_scaler.runtime import Controller
from tests.chaos import PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_hpa
from tests.support import FakeClock
from tests.test_faults_kube import CONFIG, NS, inline

START = datetime(2025, 3, 3, 12, 0, 30, tzinfo=UTC)
STEP = 300.0
DROP = START.timestamp() + 60.0
"""Demand falls from 2 x 0.9 (3 pods' worth at 0.7) to 2 x 0.3 (1 pod) after this moment."""
HOLD_MINUTES = 30  # CONFIG's missingDataHold
DELAY = CONFIG.replace("scaleDownDelay: 10m", "scaleDownDelay: 30m")
assert DELAY != CONFIG


def falling_demand(namespace: str, ts: npt.NDArray[np.float64]) -> list[tuple[dict[str, str], Any]]:
    if namespace != NS:
        return []
    values = np.where(ts <= DROP, 0.9, 0.3)
    return [({"namespace": namespace, "pod": f"nim-{i}"}, values) for i in (0, 1)]


@pytest.fixture
async def prometheus() -> AsyncIterator[PrometheusFaultProxy]:
    async with PrometheusFaultProxy(series=falling_demand) as fake:
        yield fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


class Processes:
    """Controllers started one after another against the same cluster: a restart is the old
    one closed and a new one (no shared memory) started on the same clock."""

    def __init__(self, kube_api: client.ApiClient, url: str, clock: FakeClock) -> None:
        self.kube_api, self.url, self.clock = kube_api, url, clock
        self.current: Controller | None = None

    async def restart(self, text: str) -> Controller:
        await self.close()
        self.current = Controller(
            KubeClient(self.kube_api), prometheus_url=self.url, clock=self.clock, fit_runner=inline
        )
        self.current.apply_config(parse_config(text))
        return self.current

    async def cycle(self) -> None:
        assert self.current is not None
        await asyncio.wait_for(self.current.run_due(), timeout=30)

    async def close(self) -> None:
        if self.current is not None:
            await self.current.aclose()
            self.current = None


@pytest.fixture
async def processes(
    kube_api: client.ApiClient, prometheus: PrometheusFaultProxy, clock: FakeClock
) -> AsyncIterator[Processes]:
    made = Processes(kube_api, prometheus.url, clock)
    try:
        yield made
    finally:
        await made.close()


def stored(server: KubeDouble) -> tuple[int, dict[str, str]]:
    obj = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "nim")
    assert obj is not None
    return obj["spec"]["minReplicas"], dict(obj["metadata"].get("annotations") or {})


def patch_bodies(server: KubeDouble) -> list[dict[str, Any]]:
    return [
        json.loads(r.body or b"null")
        for r in server.requests
        if r.method == "PATCH" and "/horizontalpodautoscalers/" in r.path
    ]


def assert_patches_touch_only_min_replicas_and_annotations(server: KubeDouble) -> None:
    bodies = patch_bodies(server)
    assert bodies
    for body in bodies:
        assert set(body) <= {"spec", "metadata"}, body
        assert set(body["spec"]) == {"minReplicas"}, body
        assert set(body.get("metadata", {})) <= {"annotations", "resourceVersion"}, body


def raised_hpa(state: str | None = None) -> dict[str, Any]:
    notes = {ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "6"}
    if state is not None:
        notes[ANNOTATION_STATE] = state
    return make_hpa(NS, "nim", 6, 10, annotations=notes)


async def run_minutes(processes: Processes, clock: FakeClock, minutes: int) -> None:
    for _ in range(int(minutes * 60 / STEP)):
        await processes.cycle()
        clock.advance(STEP)


# ---------------------------------------------------------------- the hold


async def test_a_restart_in_the_middle_of_a_hold_decays_at_the_original_end(
    kube_server: KubeDouble,
    prometheus: PrometheusFaultProxy,
    processes: Processes,
    clock: FakeClock,
) -> None:
    kube_server.put_object(raised_hpa())
    prometheus.set_fault("down")
    await processes.restart(CONFIG)
    await run_minutes(processes, clock, 20)  # cycles at 0, 5, 10, 15 min: all held
    assert stored(kube_server)[0] == 6

    # The process dies 20 min into the 30 min hold; a new one starts.
    await processes.restart(CONFIG)
    await run_minutes(processes, clock, 10)  # 20 and 25 min: still inside the hold
    assert stored(kube_server)[0] == 6
    await processes.cycle()  # 30 min: the original hold is over
    assert stored(kube_server)[0] == 5, "the hold restarted with the process"
    assert_patches_touch_only_min_replicas_and_annotations(kube_server)


async def test_a_crash_loop_during_a_hold_still_decays_to_the_base(
    kube_server: KubeDouble,
    prometheus: PrometheusFaultProxy,
    processes: Processes,
    clock: FakeClock,
) -> None:
    # Issue 10: a controller that restarts every 10 minutes never reached the end of a
    # 30 minute hold, so minReplicas stayed raised for good.
    kube_server.put_object(raised_hpa())
    prometheus.set_fault("down")
    for _ in range(9):
        await processes.restart(CONFIG)
        await run_minutes(processes, clock, 10)
    assert stored(kube_server)[0] == 1


async def test_a_reload_before_the_first_cycle_still_reads_the_stored_hold(
    kube_server: KubeDouble,
    prometheus: PrometheusFaultProxy,
    processes: Processes,
    clock: FakeClock,
) -> None:
    # The reload hands the old reconciler's (still empty) history to the new one.
    kube_server.put_object(raised_hpa())
    prometheus.set_fault("down")
    await processes.restart(CONFIG)
    await run_minutes(processes, clock, 20)
    controller = await processes.restart(CONFIG)
    controller.apply_config(parse_config(CONFIG.replace("refitInterval: 1h", "refitInterval: 2h")))
    await run_minutes(processes, clock, 10)
    assert stored(kube_server)[0] == 6
    await processes.cycle()
    assert stored(kube_server)[0] == 5


# ---------------------------------------------------------------- the delay


async def test_a_restart_in_the_middle_of_a_scale_down_delay_keeps_its_max(
    kube_server: KubeDouble, processes: Processes, clock: FakeClock
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    await processes.restart(DELAY)
    await processes.cycle()  # 0 min: needs 3
    assert stored(kube_server)[0] == 3
    clock.advance(STEP)
    # 5 to 20 min: needs 1; the 30 min delay runs. The need of 3 stopped more than half the
    # delay ago (CLOCK_TOLERANCE_SHARE): its time is written.
    await run_minutes(processes, clock, 20)

    await processes.restart(DELAY)  # 25 min into the delay
    await processes.cycle()  # 25 min: the max (3) still stands
    clock.advance(STEP)
    assert stored(kube_server)[0] == 3, "a restart lowered before the delay was over"
    await processes.cycle()  # 30 min: the need of 3 at 0 min has left the window
    assert stored(kube_server)[0] == 2, "the delay restarted with the process"
    assert_patches_touch_only_min_replicas_and_annotations(kube_server)


# ---------------------------------------------------------------- bad state


@pytest.mark.parametrize(
    "state",
    [
        None,  # an HPA written by an older version
        "not json",
        '{"v":1,"bad":"yesterday","good":null,"max":[]}',
        '{"v":99,"bad":1}',  # a newer version's format
        "[1,2,3]",
    ],
)
async def test_missing_or_garbage_state_starts_the_hold_from_the_new_process(
    kube_server: KubeDouble,
    prometheus: PrometheusFaultProxy,
    processes: Processes,
    clock: FakeClock,
    state: str | None,
) -> None:
    kube_server.put_object(raised_hpa(state))
    prometheus.set_fault("down")
    await processes.restart(CONFIG)
    with structlog.testing.capture_logs() as logs:
        await run_minutes(processes, clock, HOLD_MINUTES)  # the whole hold from now
    assert stored(kube_server)[0] == 6
    ignored = [e for e in logs if e["event"] == "state_annotation_ignored"]
    if state is None:
        assert ignored == []
    else:
        [event] = ignored  # once, not once a cycle
        assert event["target"] == f"{NS}/nim" and event["log_level"] == "warning"
    await processes.cycle()
    assert stored(kube_server)[0] == 5


async def test_a_hold_clock_in_the_future_is_clamped_to_now(
    kube_server: KubeDouble,
    prometheus: PrometheusFaultProxy,
    processes: Processes,
    clock: FakeClock,
) -> None:
    # Written by a controller whose clock ran an hour ahead: the hold starts now, not then.
    future = int(clock().timestamp()) + 3600
    state = json.dumps({"v": 1, "bad": future, "good": None, "max": []})
    kube_server.put_object(raised_hpa(state))
    prometheus.set_fault("down")
    await processes.restart(CONFIG)
    await run_minutes(processes, clock, HOLD_MINUTES)
    assert stored(kube_server)[0] == 6
    await processes.cycle()
    assert stored(kube_server)[0] == 5
    notes = stored(kube_server)[1]
    assert json.loads(notes[ANNOTATION_STATE])["bad"] <= clock().timestamp()


async def test_a_delay_peak_in_the_future_is_clamped_to_now(
    kube_server: KubeDouble, processes: Processes, clock: FakeClock
) -> None:
    clock.advance(STEP)  # demand is already low: needs 1 from the first cycle
    future = int(clock().timestamp()) + 7200
    state = json.dumps({"v": 1, "bad": None, "good": future, "max": [[6, future]]})
    kube_server.put_object(raised_hpa(state))
    await processes.restart(CONFIG)  # scaleDownDelay 10m
    await run_minutes(processes, clock, 10)  # 0 and 5 min: the peak of 6 (clamped) stands
    assert stored(kube_server)[0] == 6
    await processes.cycle()  # 10 min after now, not after the future
    assert stored(kube_server)[0] == 5


# ---------------------------------------------------------------- restore


async def test_restore_removes_the_state_annotation(
    kube_server: KubeDouble,
    prometheus: PrometheusFaultProxy,
    processes: Processes,
    clock: FakeClock,
) -> None:
    kube_server.put_object(raised_hpa())
    prometheus.set_fault("down")
    await processes.restart(CONFIG)
    await processes.cycle()
    assert ANNOTATION_STATE in stored(kube_server)[1]
    assert ANNOTATION_STATE in MANAGED_ANNOTATIONS
    await processes.restart(CONFIG.split("targets:", maxsplit=1)[0] + "targets: []\n")
    clock.advance(STEP)
    await processes.cycle()
    min_replicas, notes = stored(kube_server)
    assert min_replicas == 1 and not set(MANAGED_ANNOTATIONS) & set(notes)
