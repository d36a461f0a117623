"""Fit failures are contained: a killed worker, a fit over its time budget, a fit that raises.

The pool is a real spawn-context ``ProcessPoolExecutor`` (``--fit-workers``); a worker is
killed with SIGKILL as the kernel's OOM killer would. Each failure must cost at most the one
fit it hit: the pool is made anew, the target's cycle becomes a bad-data decision (hold, then
decay) whose reason is in the log, the metrics and the HPA's annotation, and the next fits
succeed. A fitter that cannot recover shows on ``/healthz``.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime

import aiohttp
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.fit_runner import FIT_NICENESS
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_REASON,
    KubeClient,
)
from predictive_scaler.logs import configure_logging
from predictive_scaler.publish import HealthState, bound_port, make_app, start_http_server
from predictive_scaler.runtime import Controller, FitTimeoutError, ProcessFitRunner
from tests.fit_jobs import answer, die, hang, niceness
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import FakeClock
from tests.test_reconcile import CONFIG, DATA_END, STEP, flat_series, hpa, min_replicas

# The idle target only (needs 1 pod), refitted every cycle so every cycle meets the pool.
IDLE_ONLY = (
    CONFIG.split("targets:")[0].replace("refitInterval: 1h", "refitInterval: 5m")
    + "targets:\n  - hpa: {namespace: idle, name: nim}"
    + CONFIG.split("  - hpa: {namespace: idle, name: nim}")[1].split("  - hpa:")[0]
)
HOLD = 1800.0  # missingDataHold of CONFIG


def _kill_fit_workers() -> int:
    """SIGKILL every worker process of this test process (only fit pools spawn any)."""
    children = multiprocessing.active_children()
    for child in children:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    return len(children)


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


@pytest.fixture
def clock() -> FakeClock:
    # Inside the backfilled history, so the data stays fresh while the clock moves on.
    return FakeClock(datetime.fromtimestamp(DATA_END - 6 * 3600 + 60, UTC))


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


@pytest.fixture
def log_lines() -> AsyncIterator[Callable[[], list[dict[str, object]]]]:
    stream = io.StringIO()
    configure_logging("json", stream=stream, force=True)

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line]

    yield lines  # type: ignore[misc]
    configure_logging("auto", force=True)


def series(lines: list[str], name: str, *labels: str) -> list[str]:
    """Values of ``name``'s samples for idle/nim that carry every label in ``labels``."""
    return [
        line.rsplit(" ", 1)[1]
        for line in lines
        if line.startswith(name + "{")
        and 'target="idle/nim"' in line
        and all(label in line for label in labels)
    ]


def raised_idle_hpa() -> dict[str, object]:
    annotations = {ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "5"}
    return make_hpa("idle", "nim", 5, 10, annotations=annotations)


# ---------------------------------------------------------------- the pool itself


async def test_a_worker_killed_during_a_fit_costs_that_fit_only() -> None:
    runner = ProcessFitRunner(1)
    try:
        assert await runner(answer) == 42
        with pytest.raises(BrokenProcessPool):
            await runner(die)
        assert await runner(answer) == 42  # a new pool, not "not usable anymore"
        assert await runner(answer) == 42
        assert runner.problem() is None
    finally:
        runner.close()


async def test_fits_run_behind_the_event_loop_for_the_cpu_also_after_a_replacement() -> None:
    # A 1,000-target cold start keeps both fit workers busy for many minutes; at the same
    # priority they took the CPU from the cycles and the liveness heartbeat.
    lowered = min(os.nice(0) + FIT_NICENESS, 19)  # 19 is the lowest priority there is
    runner = ProcessFitRunner(1)
    try:
        assert await runner(niceness) == lowered
        with pytest.raises(BrokenProcessPool):
            await runner(die)
        assert await runner(niceness) == lowered
    finally:
        runner.close()


async def test_an_idle_worker_killed_is_replaced_before_the_next_fit() -> None:
    runner = ProcessFitRunner(1)
    try:
        assert await runner(answer) == 42
        assert _kill_fit_workers() == 1
        # The death may be noticed before or while the next job is queued; either way at
        # most that one fit fails, and the ones after succeed.
        with contextlib.suppress(BrokenProcessPool):
            await runner(answer)
        assert [await runner(answer) for _ in range(3)] == [42, 42, 42]
    finally:
        runner.close()


async def test_a_fit_over_its_budget_is_cut_off_and_its_worker_reclaimed() -> None:
    runner = ProcessFitRunner(1, timeout_seconds=1.5)
    try:
        started = time.monotonic()
        with pytest.raises(FitTimeoutError):
            await runner(hang)
        assert time.monotonic() - started < 5
        # The hung worker does not keep its slot: the next fit runs at once.
        assert await runner(answer) == 42
    finally:
        runner.close()


async def test_healthz_fails_while_the_pool_keeps_breaking_and_recovers() -> None:
    runner = ProcessFitRunner(1, max_consecutive_failures=2)
    health = HealthState()
    health.tick()
    health.add_check("fit_pool", runner.problem)
    server = await start_http_server(make_app_for(health), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{bound_port(server)}/healthz"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                with pytest.raises(BrokenProcessPool):
                    await runner(die)
            async with session.get(url) as response:
                assert response.status == 503
                assert "fit_pool" in await response.text()
            assert await runner(answer) == 42
            async with session.get(url) as response:
                assert response.status == 200
    finally:
        await server.cleanup()
        runner.close()


def make_app_for(health: HealthState) -> aiohttp.web.Application:
    from predictive_scaler.publish import ControllerMetrics

    return make_app(ControllerMetrics(), health)


# ---------------------------------------------------------------- the target's cycle


async def test_a_killed_worker_never_stops_the_decisions(
    kube_server: KubeDouble, kube: KubeClient, prometheus: PrometheusServer, clock: FakeClock
) -> None:
    """The issue's case: minReplicas 5 for a need of 1; a worker is OOM-killed between
    cycles. Today every cycle after it fails ("process pool is not usable anymore") and 5
    stays; contained, at most one cycle holds, and the decay to the base goes on."""
    kube_server.put_object(raised_idle_hpa())
    runner = ProcessFitRunner(1)
    controller = Controller(kube, prometheus_url=prometheus.url, clock=clock, fit_runner=runner)
    try:
        controller.apply_config(parse_config(IDLE_ONLY))
        [first] = await controller.run_due()
        assert first.signals[0].data_ok
        assert _kill_fit_workers() == 1
        seen: list[tuple[bool, int]] = []
        for _cycle in range(10):
            clock.advance(STEP)
            reports = await controller.run_due()
            assert len(reports) == 1, "the cycle ended without a decision"
            seen.append((reports[0].signals[0].data_ok, min_replicas(kube_server, "idle")))
        assert all(ok for ok, _ in seen[1:]), seen  # fitting resumed
        assert seen[-1][1] == 1, seen  # and the raise was given back
    finally:
        await controller.aclose()
        runner.close()


async def test_an_exception_in_a_fit_is_a_bad_data_decision(
    kube_server: KubeDouble,
    kube: KubeClient,
    prometheus: PrometheusServer,
    clock: FakeClock,
    log_lines: Callable[[], list[dict[str, object]]],
) -> None:
    """Any exception out of a fit (a model's bug, a pickling error) holds, then decays, and
    says why in the log, the metrics and the annotation."""

    async def broken(_fit: object) -> object:
        raise ZeroDivisionError("float division by zero")

    kube_server.put_object(raised_idle_hpa())
    controller = Controller(kube, prometheus_url=prometheus.url, clock=clock, fit_runner=broken)  # type: ignore[arg-type]
    try:
        controller.apply_config(parse_config(IDLE_ONLY))
        began = clock().timestamp()
        seen = []
        for _cycle in range(int(HOLD / STEP) + 8):
            reports = await controller.run_due()
            assert len(reports) == 1, "the cycle ended without a decision"
            [signal_report] = reports[0].signals
            assert signal_report.problem is not None
            assert "ZeroDivisionError" in signal_report.problem
            now_min = min_replicas(kube_server, "idle")
            if clock().timestamp() - began < HOLD:
                assert now_min == 5, "lowered within the missing-data hold"
            seen.append(now_min)
            clock.advance(STEP)
        assert seen[-1] == 1, seen
        reason = hpa(kube_server, "idle")["metadata"]["annotations"][ANNOTATION_REASON]  # type: ignore[index]
        assert reason.split(":")[0] in {"FailedGetMetric", "MissingDataDecay"}
        text = controller.metrics.generate_latest().decode().splitlines()
        assert series(text, "predictive_scaler_cycle_errors_total", 'kind="fit"')
        assert series(text, "predictive_scaler_data_ok") == ["0.0"]
        failed = [line for line in log_lines() if line["event"] == "forecast_fit_failed"]
        assert failed and "ZeroDivisionError" in str(failed[0]["error"])
        assert failed[0]["target"] == "idle/nim"
        assert not [line for line in log_lines() if line["event"] == "cycle_failed"]
    finally:
        await controller.aclose()
