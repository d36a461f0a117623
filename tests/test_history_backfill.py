"""A staged first fetch (issue 10 item 4 and its done-when at 1,000 targets).

The finding: with a progressive start the first decision still waited for each target's
whole history (7 days at 1 m): at a thousand targets the cold cycle was hundreds of MB of
JSON and Prometheus' evaluation of it, 277 s at load 8, against a bar of 60 s for every
target's first decision. Now a first fetch reads the newest two days, the stand-in decides on
them, the rest is read beside the cycles and put in front of the buffer, and the configured
model is fitted on the whole history: the buffer ends exactly as an unstaged first fetch's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from predictive_scaler.config import parse_config
from predictive_scaler.demand_query import DemandRead
from predictive_scaler.history_backfill import (
    FIRST_FETCH_SECONDS,
    Backfill,
    absorb,
    first_fetch_start,
    next_window,
)
from predictive_scaler.kube import KubeClient
from predictive_scaler.logs import get_logger
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
from predictive_scaler.reconcile import TargetReconciler
from predictive_scaler.signal_buffer import SignalBuffer
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock

STEP = 300.0
DAYS = 5
END = math.floor(time.time() / STEP) * STEP - STEP

CONFIG = """\
defaults: {interval: 5m, step: 5m, history: 5d, minHistory: 1h, warmup: 10m,
           model: holt_winters, seasons: [], refitInterval: 6h, staleAfter: 15m}
targets:
  - hpa: {namespace: daily, name: nim}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{${matchers}})'
        hpaMetric: gpu_cache_usage_perc
"""


def daily_series() -> list[Series]:
    ts = np.arange(END - DAYS * 86400, END + 1, STEP)
    rng = np.random.default_rng(11)
    day = 0.5 + 0.3 * np.sin(2 * np.pi * ts / 86400)
    return [
        (
            "gpu_cache_usage_perc",
            {"namespace": "daily", "pod": pod},
            ts,
            np.round(day + rng.normal(0, 0.01, ts.size), 6),
        )
        for pod in ("nim-0", "nim-1")
    ]


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(daily_series())


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    src = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=10.0))
    yield src
    src.close()


# ---------------------------------------------------------------- the pure parts


def test_a_first_fetch_reads_two_days_or_min_history_if_longer_or_all_when_shorter() -> None:
    day = 86_400.0
    end = 100 * day
    assert first_fetch_start(end - 7 * day, end, 60.0, 3600.0) == end - 2 * day + 60.0
    assert first_fetch_start(end - 7 * day, end, 60.0, 3 * day) == end - 3 * day + 60.0
    assert first_fetch_start(end - day, end, 60.0, 3600.0) == end - day
    assert day * 2 == FIRST_FETCH_SECONDS


@pytest.mark.parametrize(
    ("capacity", "older_start", "older", "taken", "values", "start"),
    [
        (6, 7.0, [1.0, 2.0], 2, [1.0, 2.0, 3.0, 4.0], 7.0),  # ends one step before: taken
        (3, 5.0, [0.0, 1.0, 2.0], 1, [2.0, 3.0, 4.0], 9.0),  # only what there is room for
        (6, 5.0, [1.0, 2.0], 0, [3.0, 4.0], 11.0),  # leaves a gap: refused
        (6, 9.0, [1.0, 2.0], 0, [3.0, 4.0], 11.0),  # overlaps: refused
        (2, 7.0, [1.0, 2.0], 0, [3.0, 4.0], 11.0),  # no room
    ],
)
def test_prepend_puts_the_older_part_in_front_only_when_it_ends_where_the_buffer_starts(
    capacity: int,
    older_start: float,
    older: list[float],
    taken: int,
    values: list[float],
    start: float,
) -> None:
    buffer = SignalBuffer(capacity, 2.0)
    buffer.append(11.0, np.array([3.0, 4.0]))
    assert buffer.prepend(older_start, np.array(older)) == taken
    assert buffer.values.tolist() == values
    assert buffer.start == start
    assert buffer.last == 13.0
    buffer.append(15.0, np.array([5.0]))  # the ring goes on from there
    assert buffer.values.tolist() == [*values, 5.0][-capacity:]


@pytest.mark.parametrize(
    ("outcome", "complete", "values"),
    [
        (DemandRead(None, np.array([1.0, 2.0])), True, [1.0, 2.0, 3.0, 4.0]),
        (DemandRead("no data: empty", None), True, [3.0, 4.0]),  # nothing older
        (DemandRead(None, None, "gaps in the other queries: ..."), True, [3.0, 4.0]),
        (DemandRead("prometheus error: 503", None), False, [3.0, 4.0]),  # asked again
        (DemandRead(None, None, "queue query failed: 503"), False, [3.0, 4.0]),
        (TimeoutError("no answer"), False, [3.0, 4.0]),
    ],
)
def test_a_finished_read_completes_the_history_or_is_made_again(
    outcome: DemandRead | BaseException, complete: bool, values: list[float]
) -> None:
    buffer = SignalBuffer(6, 2.0)
    buffer.append(10.0, np.array([3.0, 4.0]))
    assert next_window(buffer, 12.5) == (2.0, 8.0)  # the 6 steps kept now: 2 .. 12
    done = absorb(buffer, 6.0, outcome, lambda _start, v: v, get_logger(), "kv_cache")
    assert done is complete
    assert buffer.values.tolist() == values
    assert next_window(buffer, 100.0) is None  # the history has moved past it


async def test_waiting_for_a_read_can_itself_be_cancelled() -> None:
    backfill = Backfill(0.0)
    backfill.task = asyncio.get_running_loop().create_task(asyncio.sleep(60))  # type: ignore[arg-type]
    waiter = asyncio.get_running_loop().create_task(backfill.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
    assert waiter.cancelled()  # a benchmark's or a test's stop is not swallowed
    backfill.cancel()


# ---------------------------------------------------------------- through a cycle


async def test_the_first_cycle_reads_two_days_and_the_buffer_ends_as_an_unstaged_one(
    kube_server: KubeDouble, kube_api: object, source: PrometheusSource
) -> None:
    [target] = parse_config(CONFIG).targets
    kube_server.put_object(make_hpa("daily", "nim", 1, 10))
    kube = KubeClient(kube_api, reporting_instance="test")  # type: ignore[arg-type]
    # A day before the data ends, so every later cycle brings a new point.
    clock = FakeClock(datetime.fromtimestamp(END - 86400 + 60, UTC))
    staged = TargetReconciler(target, source, kube, clock=clock, progressive=True, dry_run=True)
    whole = TargetReconciler(target, source, kube, clock=clock, dry_run=True)
    try:
        first = await asyncio.wait_for(staged.reconcile(), 30)
        [signal] = first.signals
        # The stand-in decided on the newest two days alone.
        assert signal.problem is None and first.recommended is not None
        assert signal.points == FIRST_FETCH_SECONDS / STEP
        assert signal.model == "seasonal_naive"

        reference = await asyncio.wait_for(whole.reconcile(), 60)
        assert reference.signals[0].points == DAYS * 86400 / STEP  # the capacity

        # The rest is read beside the cycles and put in front at the next one; the
        # configured model is then fitted on the whole history.
        for _ in range(3):
            await asyncio.wait_for(staged.wait_for_fits(), 60)
            clock.advance(STEP)
            report = await asyncio.wait_for(staged.reconcile(), 60)
            await asyncio.wait_for(whole.reconcile(), 60)
        await asyncio.wait_for(staged.wait_for_fits(), 60)
        report = await asyncio.wait_for(staged.reconcile(), 60)
        assert report.signals[0].model == "holt_winters"
        [mine] = staged._signals.values()
        [theirs] = whole._signals.values()
        assert mine.start == theirs.start and mine.size == theirs.size
        np.testing.assert_array_equal(mine.values, theirs.values)
        assert mine.backfill is None
    finally:
        staged.close()
        whole.close()
