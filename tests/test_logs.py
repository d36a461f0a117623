"""Every line a `run` writes follows the chosen --log-format, lifecycle lines included.

The controller runs in-process on fake time (as tests/test_runtime.py runs it) against the API
server double and a real Prometheus; its output is captured at the file descriptors, so a line
from a logger configured before `configure_logging`, or from the standard library's logging,
shows up here too.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from predictive_scaler.logs import LogFormat, configure_logging
from predictive_scaler.runtime import Controller, RunOptions, run_controller
from tests.kube_double import KubeDouble, make_configmap, make_hpa, write_kubeconfig
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import FakeClock, QuiescentSleeper, eventually
from tests.test_reconcile import CONFIG, DATA_END, flat_series, min_replicas

BUSY_ONLY = CONFIG.split("  - hpa: {namespace: idle")[0]

LIFECYCLE = {
    "config_reloaded",
    "leadership_acquired",
    "controller_started",
    "min_replicas_patched",
    "controller_stopping",
    "controller_stopped",
}
"""Events one short run must write: from the process, the lease and a target's cycle."""

CONSOLE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[(\w+)\s*\] (\w+)")
"""One event of the configured console renderer: ISO timestamp, level, event name."""


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    configure_logging("auto", force=True)


async def _run_once(
    log_format: LogFormat,
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Start `run`, let it patch once and reload its config, then stop it."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, kube_server.token)
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": BUSY_ONLY}))
    kube_server.put_object(make_hpa("busy", "nim", 2, 10))
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))

    sleeper = QuiescentSleeper(clock)

    started: list[Controller] = []
    stop = asyncio.Event()
    options = RunOptions(
        config_map="ops/scaler",
        kubeconfig=str(kubeconfig),
        prometheus_url=prometheus.url,
        metrics_port=0,
        metrics_host="127.0.0.1",
        identity="me",
        log_format=log_format,
    )
    task = asyncio.create_task(
        run_controller(
            options,
            clock=clock,
            sleeper=sleeper,
            stop=stop,
            install_signal_handlers=False,
            on_started=sleeper.collect(started),
        )
    )
    try:
        await eventually(lambda: bool(started) or task.done())
        assert started, task
        await eventually(lambda: min_replicas(kube_server, "busy") == 3)
        kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": BUSY_ONLY + "\n"}))
        applied = started[0].metrics.config_reloads.labels("applied")
        await eventually(lambda: applied._value.get() >= 2)
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0
    finally:
        if not task.done():
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_json_format_covers_every_line_of_a_run(
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    await _run_once("json", kube_server, prometheus, tmp_path, monkeypatch)
    captured = capfd.readouterr()
    events: list[str] = []
    for stream, text in (("stdout", captured.out), ("stderr", captured.err)):
        for line in text.splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                raise AssertionError(f"{stream} line is not JSON: {line!r}") from None
            assert isinstance(parsed, dict) and "event" in parsed, f"{stream}: {line!r}"
            events.append(str(parsed["event"]))
    missing = LIFECYCLE - set(events)
    assert not missing, f"no JSON line for {sorted(missing)}; got {sorted(set(events))}"


async def test_console_format_is_one_event_a_line(
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    await _run_once("console", kube_server, prometheus, tmp_path, monkeypatch)
    captured = capfd.readouterr()
    events: list[str] = []
    for stream, text in (("stdout", captured.out), ("stderr", captured.err)):
        for line in text.splitlines():
            match = CONSOLE_LINE.match(line)
            assert match is not None, f"{stream} line is not one console event: {line!r}"
            events.append(match.group(2))
    missing = LIFECYCLE - set(events)
    assert not missing, f"no console line for {sorted(missing)}; got {sorted(set(events))}"
