"""``run --config FILE``: the file is polled by its mtime; a change is applied, an unchanged
file is not re-read, and a bad edit is rejected with the last good configuration kept.
Issue 11 found this reload untested: a poll that never re-read the file passed the suite."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kubernetes_asyncio import client

from predictive_scaler.kube import KubeClient
from predictive_scaler.runtime import Controller, RunOptions
from predictive_scaler.tasks import poll_config_file
from tests.support import FakeClock
from tests.test_reconcile import CONFIG

BUSY_ONLY = CONFIG.split("  - hpa: {namespace: idle")[0]
PROMETHEUS = "prometheus:\n  url: http://127.0.0.1:9\n"


def reloads(controller: Controller, result: str) -> float:
    value: float = controller.metrics.config_reloads.labels(result)._value.get()
    return value


def write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(PROMETHEUS + text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


async def test_the_config_file_is_reloaded_when_its_mtime_changes(
    kube_api: client.ApiClient, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write(path, BUSY_ONLY, 1_000_000_000)
    controller = Controller(
        KubeClient(kube_api), clock=FakeClock(datetime(2026, 11, 1, tzinfo=UTC))
    )
    try:
        assert await controller.load_config_file(str(path))
        assert set(controller.reconcilers) == {("busy", "nim")}
        stop = asyncio.Event()
        seen: list[tuple[set[tuple[str, str]], float, float]] = []

        def observe() -> None:
            seen.append(
                (
                    set(controller.reconcilers),
                    reloads(controller, "applied"),
                    reloads(controller, "rejected"),
                )
            )

        # Each poll's sleep runs one step of the script, then the poll looks at the file.
        script: list[Callable[[], None]] = [
            lambda: None,  # unchanged: not re-read
            lambda: write(path, CONFIG, 2_000_000_000),  # every target: applied
            lambda: write(path, "targets: [", 3_000_000_000),  # broken: rejected, kept
        ]

        async def sleeper(seconds: float) -> None:
            assert seconds == 5.0
            observe()
            if not script:
                stop.set()
                return
            script.pop(0)()

        options = RunOptions(config_file=str(path))
        await asyncio.wait_for(poll_config_file(controller, options, sleeper, stop), 30)
    finally:
        await controller.aclose()
    every = {("busy", "nim"), ("idle", "nim"), ("halved", "nim"), ("empty", "nim")}
    busy = {("busy", "nim")}
    assert seen == [
        (busy, 1.0, 0.0),  # before the first poll
        (busy, 1.0, 0.0),  # the unchanged file was not applied again
        (every, 2.0, 0.0),  # the edit was applied
        (every, 2.0, 1.0),  # the broken edit was rejected, the last good one kept
    ]
