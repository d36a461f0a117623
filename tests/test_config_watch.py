"""The ConfigMap watch never ends for good: disconnects, 401/403 (a rotated token, an RBAC
change being rolled out), 410 Gone and a deleted-then-recreated ConfigMap are each survived,
with a backoff through a delay sequence (fake sleeps here) and a restart counter on /metrics.
Each fault comes from the API double, through the real client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from kubernetes_asyncio import client

from predictive_scaler.kube import KubeClient
from predictive_scaler.runtime import Controller
from predictive_scaler.tasks import follow_config_map
from tests.chaos import PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_configmap
from tests.support import closing_controller, eventually
from tests.test_faults_kube import CONFIG, flat_demand, inline


@pytest.fixture
async def controller(kube_api: client.ApiClient) -> AsyncIterator[Controller]:
    async with (
        PrometheusFaultProxy(series=flat_demand) as prometheus,
        closing_controller(kube_api, prometheus_url=prometheus.url, fit_runner=inline) as made,
    ):
        yield made


def _restarts(controller: Controller, reason: str) -> float:
    text = controller.metrics.generate_latest().decode()
    prefix = f'predictive_scaler_config_watch_restarts_total{{reason="{reason}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def _warmup(controller: Controller) -> int | None:
    return controller.config.defaults.warmup_seconds if controller.config else None


def _forbidden(server: KubeDouble) -> None:
    server.fail_next("GET", r"/namespaces/ops/configmaps$", 403, times=2)
    server.drop_watches()


def _unauthorized(server: KubeDouble) -> None:
    server.fail_next("GET", r"/namespaces/ops/configmaps$", 401, times=2)
    server.drop_watches()


def _gone(server: KubeDouble) -> None:
    server.put_object(make_configmap("ops", "unrelated"))
    server.compact()
    server.drop_watches()  # the re-watch from the old version gets 410 Gone


def _reset(server: KubeDouble) -> None:
    server.drop_watches(abort=True)


FAULTS: list[tuple[str, Callable[[KubeDouble], None], str]] = [
    ("403", _forbidden, "forbidden"),
    ("401", _unauthorized, "unauthorized"),
    ("410", _gone, "expired"),
    ("reset", _reset, "disconnected"),
]


@pytest.mark.parametrize(("case", "fault", "reason"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_the_watch_survives_a_fault_and_applies_the_next_config(
    kube_server: KubeDouble,
    controller: Controller,
    case: str,
    fault: Callable[[KubeDouble], None],
    reason: str,
) -> None:
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": CONFIG}))
    delays: list[float] = []

    async def sleeper(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    ready = asyncio.Event()
    task = asyncio.create_task(follow_config_map(controller, ("ops", "scaler"), sleeper, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert _warmup(controller) == 600
        await kube_server.wait_for_watches(1)
        fault(kube_server)
        await kube_server.wait_for_watches(1, timeout_seconds=10)
        assert not task.done(), f"the watch ended: {task!r}"
        changed = CONFIG.replace("warmup: 10m", "warmup: 15m")
        kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": changed}))
        await eventually(lambda: _warmup(controller) == 900 or task.done(), 10)
        assert not task.done(), f"the watch ended: {task!r}"
        assert _warmup(controller) == 900
        assert _restarts(controller, reason) >= 1, controller.metrics.generate_latest().decode()
        if case in {"401", "403"}:  # two refused attempts: two growing delays
            assert len(delays) >= 2 and 0 < delays[0] <= delays[1], delays
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


async def test_a_deleted_then_recreated_config_map_is_followed(
    kube_server: KubeDouble, controller: Controller
) -> None:
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": CONFIG}))

    async def sleeper(_seconds: float) -> None:
        await asyncio.sleep(0)

    ready = asyncio.Event()
    task = asyncio.create_task(follow_config_map(controller, ("ops", "scaler"), sleeper, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        good = controller.config
        await kube_server.wait_for_watches(1)
        kube_server.delete_object("v1", "ConfigMap", "ops", "scaler")
        await eventually(lambda: bool(kube_server.list_events("ops")), 10)
        [event] = kube_server.list_events("ops")
        assert "does not exist" in event["message"]
        assert controller.config is good  # the last good one stays in force
        changed = CONFIG.replace("warmup: 10m", "warmup: 15m")
        kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": changed}))
        await eventually(lambda: _warmup(controller) == 900 or task.done(), 10)
        assert _warmup(controller) == 900, task
        assert "predictive_scaler_config_valid 1.0" in controller.metrics.generate_latest().decode()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


async def test_refused_watches_back_off_through_the_delay_sequence(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    from predictive_scaler.config_watch import watch_config_map
    from predictive_scaler.publish import ControllerMetrics

    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": "a: 1"}))
    kube_server.fail_next("GET", r"/namespaces/ops/configmaps$", 403, times=4)
    delays: list[float] = []
    seen: list[str] = []

    async def sleeper(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    async def on_event(event: object) -> None:
        seen.append(repr(event))

    metrics = ControllerMetrics()
    task = asyncio.create_task(
        watch_config_map(
            KubeClient(kube_api),
            "ops",
            "scaler",
            on_event,  # type: ignore[arg-type]
            metrics=metrics,
            sleep=sleeper,
            backoff_seconds=(7.0, 11.0, 13.0),
        )
    )
    try:
        await eventually(lambda: bool(seen) or task.done(), 10)
        assert not task.done(), task
        assert delays[:4] == [7.0, 11.0, 13.0, 13.0], delays  # the last delay repeats
        text = metrics.generate_latest().decode()
        assert 'predictive_scaler_config_watch_restarts_total{reason="forbidden"} 4.0' in text
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
