"""Small helpers shared by the tests: a clock tests move by hand, a bounded wait, the
shared traces, and a whole ``run`` process started and stopped on fake time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from kubernetes_asyncio import client

from predictive_scaler.kube import KubeClient
from predictive_scaler.runtime import Controller, RunOptions, run_controller
from predictive_scaler.values import ObjectRef
from tests.kube_double import KubeDouble, write_kubeconfig


class FakeClock:
    """A clock that stands still until a test advances it (timezone-aware)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def eventually(predicate: Callable[[], bool], within_seconds: float = 30.0) -> None:
    """Poll a condition the controller's own tasks will make true (its loop runs on fake
    time, so there is no event to wait on); fail after ``within_seconds`` of real time."""
    async with asyncio.timeout(within_seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
"""The workplace's traces, in ``shared/`` beside the checkout (as CI lays it, and as
``/work/main`` and each worktree under ``/work/wt`` see it): never an absolute path."""


def shared_trace(name: str) -> Path:
    """A shared trace by file name; raises when ``shared/`` beside the checkout lacks it."""
    path = SHARED_TRACES / name
    if not path.is_file():
        raise FileNotFoundError(f"shared trace {name} not in {SHARED_TRACES}")
    return path


DEFAULTS_YAML = """\
defaults:
  interval: 5m
  step: 5m
  history: 1d
  minHistory: 1h
  warmup: 10m
  model: persistence
  seasons: []
  refitInterval: 1h
  scaleDownDelay: 10m
  missingDataHold: 30m
  staleAfter: 15m
"""
"""The ``defaults:`` block the loop's tests share: 5-minute steps, a day of history, the
persistence model (fast, exact), a 10-minute warm-up and delay. A test appends its
``targets:`` (see :func:`config_yaml`) instead of copying this block."""


def config_yaml(targets: str) -> str:
    """A configuration of :data:`DEFAULTS_YAML` and ``targets`` (the ``targets:`` block)."""
    return DEFAULTS_YAML + targets


class Busy(Protocol):
    def busy(self) -> bool: ...


class QuiescentSleeper:
    """The fake ``sleeper`` of a whole ``run_controller``: fake time moves only while no
    target cycle is running.

    The process runs its cycles beside its other tasks (lease, config watch, informer), and
    each of them sleeps through this. Were every sleep to move the shared clock at once,
    those tasks would age the data by minutes of fake time while one cycle's fit takes a
    real second, and a forecast could go stale between two reads of a test. Holding the
    clock until the cycles are done makes a cycle take no fake time, whatever the machine's
    load. Give it the controller's dispatcher (``on_started``) to watch.
    """

    def __init__(self, clock: FakeClock, pause_seconds: float = 0.002) -> None:
        self.clock = clock
        self.pause_seconds = pause_seconds
        self.watched: list[Busy] = []
        self.frozen = False
        """Set by a test that reads several things that must agree: time stops."""

    def watch(self, dispatcher: Busy) -> None:
        self.watched.append(dispatcher)

    async def __call__(self, seconds: float) -> None:
        while any(d.busy() for d in self.watched):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        if self.frozen:
            await asyncio.sleep(0.01)
            return
        self.clock.advance(seconds)
        await asyncio.sleep(self.pause_seconds)  # let the other tasks run

    def collect(self, started: list[Any]) -> Callable[[Any], None]:
        """An ``on_started`` that appends the controller to ``started`` and watches it."""

        def on_started(controller: Any) -> None:
            started.append(controller)
            self.watch(controller.dispatcher)

        return on_started


# ---------------------------------------------------------------- a whole `run` process


def run_options(
    kube_server: KubeDouble,
    prometheus_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **fields: Any,
) -> RunOptions:
    """``run``'s options against the API double, from outside a cluster: a kubeconfig with
    the double's token, /metrics on a free loopback port, identity ``me``, the configuration
    from the ConfigMap ``ops/scaler`` (unless ``fields`` give a ``config_file``); ``fields``
    override any of them."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, kube_server.token)
    defaults: dict[str, Any] = {
        "config_map": None if "config_file" in fields else "ops/scaler",
        "kubeconfig": str(kubeconfig),
        "prometheus_url": prometheus_url,
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "identity": "me",
    }
    return RunOptions(**{**defaults, **fields})


@dataclass
class RunningController:
    """A ``run_controller`` task and the controller it started."""

    controller: Controller
    task: asyncio.Task[int]
    stop_event: asyncio.Event

    async def exit_code(self, within_seconds: float = 20.0) -> int:
        """The process's exit code once it ends by itself (a signal, an error)."""
        return await asyncio.wait_for(self.task, within_seconds)

    async def stop(self, within_seconds: float = 20.0) -> int:
        """Ask the process to stop, as SIGTERM does; its exit code."""
        self.stop_event.set()
        return await self.exit_code(within_seconds)


@contextlib.asynccontextmanager
async def running_controller(
    options: RunOptions,
    *,
    clock: Callable[[], datetime],
    sleeper: Callable[[float], Awaitable[None]],
    quiescent: QuiescentSleeper | None = None,
    on_started: Callable[[Controller], None] | None = None,
    install_signal_handlers: bool = False,
    start_within_seconds: float = 30.0,
) -> AsyncIterator[RunningController]:
    """Run the controller process as ``predictive-scaler run`` does, on ``clock`` and
    ``sleeper``, until the test is done with it: yields once the process has started (its
    configuration applied, /metrics served); a process still running at the end is
    cancelled. ``quiescent`` (by default ``sleeper`` itself when it is one) is given the
    controller's dispatcher to watch; ``on_started`` sees the controller first."""
    watcher = quiescent or (sleeper if isinstance(sleeper, QuiescentSleeper) else None)
    started: list[Controller] = []
    stop = asyncio.Event()

    def hook(controller: Controller) -> None:
        started.append(controller)
        if watcher is not None:
            watcher.watch(controller.dispatcher)
        if on_started is not None:
            on_started(controller)

    task = asyncio.create_task(
        run_controller(
            options,
            clock=clock,
            sleeper=sleeper,
            stop=stop,
            install_signal_handlers=install_signal_handlers,
            on_started=hook,
        ),
        name="controller",
    )
    try:
        await eventually(lambda: bool(started) or task.done(), start_within_seconds)
        assert started, task
        yield RunningController(started[0], task, stop)
    finally:
        if not task.done():
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


CONFIG_ORIGIN = ObjectRef("v1", "ConfigMap", "ops", "scaler")
"""The ConfigMap :func:`run_options` reads, as a :class:`Controller`'s ``config_origin``."""


@contextlib.asynccontextmanager
async def closing_controller(
    kube_api: client.ApiClient,
    *,
    clock: Callable[[], datetime] | None = None,
    **fields: Any,
) -> AsyncIterator[Controller]:
    """A :class:`Controller` over the API double, closed at the end; by default on a
    :class:`FakeClock` at 2025-03-03 12:00:30 UTC and reporting on :data:`CONFIG_ORIGIN`."""
    fields.setdefault("config_origin", CONFIG_ORIGIN)
    made = Controller(
        KubeClient(kube_api),
        clock=clock or FakeClock(datetime(2025, 3, 3, 12, 0, 30, tzinfo=UTC)),
        **fields,
    )
    try:
        yield made
    finally:
        await made.aclose()
