"""Every line a `run` writes follows the chosen --log-format, lifecycle lines included.

The controller runs in-process on fake time (as tests/test_runtime.py runs it) against the API
server double and a real Prometheus; its output is captured at the file descriptors, so a line
from a logger configured before `configure_logging`, or from the standard library's logging,
shows up here too.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from predictive_scaler.logs import LogFormat, configure_logging
from tests.kube_double import KubeDouble, make_configmap, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import (
    FakeClock,
    QuiescentSleeper,
    eventually,
    run_options,
    running_controller,
)
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
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": BUSY_ONLY}))
    kube_server.put_object(make_hpa("busy", "nim", 2, 10))
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))
    options = run_options(kube_server, prometheus.url, tmp_path, monkeypatch, log_format=log_format)
    sleeper = QuiescentSleeper(clock)
    async with running_controller(options, clock=clock, sleeper=sleeper) as running:
        await eventually(lambda: min_replicas(kube_server, "busy") == 3)
        kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": BUSY_ONLY + "\n"}))
        applied = running.controller.metrics.config_reloads.labels("applied")
        await eventually(lambda: applied._value.get() >= 2)
        assert await running.stop() == 0


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
