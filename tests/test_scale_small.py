"""The scale optimisations keep the answers: a 20-target version of benchmarks/scale.py.

A real Prometheus holds one demand series per target (the shared 1-minute Twitter trace,
shifted and rescaled per target), the API double holds the HPAs, and the controller runs in
dry-run with a time-travelling clock. No timing is asserted, only that

- a batched range query, split back per target, equals each target's own query (including
  label values that are regex metacharacters);
- a controller with batched queries and fits in a process pool decides exactly as one with
  per-target queries and fits in a thread, with fewer Prometheus requests;
- a steady cycle refits only the targets whose staggered refit is due, and every target is
  refitted within the refit interval.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.forecasting import refit_offset
from predictive_scaler.kube import KubeClient
from predictive_scaler.prometheus import (
    PrometheusSettings,
    PrometheusSource,
    RangeResult,
    batch_shape,
    batchable_metrics,
    fresh_samples_template,
    latest_sample_template,
    render_batch_query,
    render_matchers,
    render_query,
)
from predictive_scaler.reconcile import CycleReport
from predictive_scaler.runtime import Controller, ProcessFitRunner
from predictive_scaler.traces import load_trace
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock, shared_trace

TRACE = shared_trace("twitter_stream_2021-08_1min.csv")
TARGETS = 20
STEP = 60.0
DAYS = 3
REFIT_POINTS = 10
# Label values that are regex metacharacters, and decoys an unescaped regex would match.
SPECIAL = {"ns-0": "a.c", "ns-1": "x+y|z", "ns-2": "(q)*"}
DECOYS = {"ns-0": "abc", "ns-1": "xxy", "ns-2": "qq"}


@dataclass(frozen=True)
class History:
    end: float
    series: list[Series]


def _history() -> History:
    raw = load_trace(TRACE).values
    points = DAYS * 1440
    end = math.floor(time.time() / STEP) * STEP - 600.0
    ts = end - STEP * np.arange(points - 1, -1, -1, dtype=np.float64)
    rng = np.random.default_rng(20)
    series: list[Series] = []
    for i in range(TARGETS):
        offset = int(rng.integers(0, raw.size - points))
        segment = raw[offset : offset + points]
        demand = np.round(segment / np.percentile(segment, 99) * rng.integers(2, 10) * 0.7, 3)
        ns = f"ns-{i}"
        labels = {"namespace": ns, "pod": "nim-0", "model": SPECIAL.get(ns, "llm")}
        series.append(("gpu_cache_usage_perc", labels, ts, demand))
        if ns in DECOYS:
            decoy = {"namespace": ns, "pod": "nim-9", "model": DECOYS[ns]}
            series.append(("gpu_cache_usage_perc", decoy, ts, demand + 100.0))
    return History(end, series)


@pytest.fixture(scope="module")
def history() -> History:
    return _history()


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory, history: History) -> PrometheusServer:
    return prometheus_factory(history.series)


def _labels(i: int) -> dict[str, str]:
    ns = f"ns-{i}"
    return {"namespace": ns, "model": SPECIAL.get(ns, "llm")}


def _config(refit: str = "10m", prometheus: str = "") -> str:
    lines = [
        *([prometheus] if prometheus else []),
        "defaults:",
        "  interval: 30s",
        "  step: 1m",
        "  history: 2d",
        "  warmup: 10m",
        "  model: auto",
        "  seasons: [daily]",
        f"  refitInterval: {refit}",
        "  dryRun: true",
        "targets:",
    ]
    for i in range(TARGETS):
        model = SPECIAL.get(f"ns-{i}", "llm").replace("'", "''")
        lines.append(
            f"  - hpa: {{namespace: ns-{i}, name: llm}}\n    selector: {{model: '{model}'}}"
        )
    return "\n".join(lines) + "\n"


def _query_range_requests(prometheus: PrometheusServer) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{prometheus.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{")
        and 'handler="/api/v1/query_range"' in line
    )


@pytest.fixture
def hpas(kube_server: KubeDouble) -> Iterator[None]:
    for i in range(TARGETS):
        kube_server.put_object(make_hpa(f"ns-{i}", "llm", 1, 20, "700m", current_replicas=1))
    yield


def _fit_ids(controller: Controller) -> dict[str, int]:
    return {
        rec.target.id: id(state.forecaster.fit_)
        for rec in controller.reconcilers.values()
        for state in rec._signals.values()
    }


def _summary(reports: list[CycleReport]) -> dict[str, tuple[object, ...]]:
    return {
        r.target: (
            r.recommended,
            r.reason,
            r.signals[0].problem,
            r.signals[0].model,
            r.signals[0].mean,
            r.signals[0].upper_max,
            r.signals[0].points,
        )
        for r in reports
    }


# ---------------------------------------------------------------------------- batching


@pytest.mark.parametrize(
    ("template", "metric"),
    [
        ("sum(gpu_cache_usage_perc{${matchers}})", "gpu_cache_usage_perc"),
        (" sum ( vllm:num_requests_waiting { ${matchers} } ) ", "vllm:num_requests_waiting"),
        ("avg(gpu_cache_usage_perc{${matchers}})", None),
        ("sum(rate(prompt_tokens_total{${matchers}}[5m]))", None),
        ('sum(gpu_cache_usage_perc{${matchers},model="x"})', None),
        ("sum(a{${matchers}}) + sum(b{${matchers}})", None),
    ],
)
def test_only_the_preset_shape_is_batched(template: str, metric: str | None) -> None:
    # (An `or` of several names is the shape too: tests/test_promql_shapes.py.)
    assert batchable_metrics(template) == (None if metric is None else (metric,))


def test_batch_query_escapes_values_for_re2_then_promql() -> None:
    query, names = render_batch_query(
        "m", [{"namespace": "a.b", "app": 'q"|\\'}, {"namespace": "c", "app": "x"}]
    )
    assert names == ("namespace", "app")
    # RE2: a.b -> a\.b and q"|\ -> q\"\|\\ ; then PromQL doubles each backslash and escapes ".
    assert query == r'sum by (namespace, app) (m{namespace=~"a\\.b|c",app=~"q\\\"\\|\\\\|x"})'


@pytest.mark.parametrize(
    ("template", "batched"),
    [
        (
            fresh_samples_template("sum(gpu_cache_usage_perc{${matchers}})", 60.0),
            'sum by (namespace) (count_over_time(gpu_cache_usage_perc{namespace=~"a"}[59999ms]))',
        ),
        # A user's own query of that shape keeps its own range.
        (
            "sum(count_over_time(m{${matchers}}[300000ms]))",
            'sum by (namespace) (count_over_time(m{namespace=~"a"}[300000ms]))',
        ),
        (
            latest_sample_template("sum(gpu_cache_usage_perc{${matchers}})"),
            'max by (namespace) (timestamp(gpu_cache_usage_perc{namespace=~"a"}))',
        ),
    ],
)
def test_freshness_queries_batch_with_their_own_range(template: str | None, batched: str) -> None:
    assert template is not None
    shape = batch_shape(template)
    assert shape is not None
    kind, metric = shape
    assert render_batch_query(metric, [{"namespace": "a"}], kind=kind) == (batched, ("namespace",))


async def test_a_batched_query_split_per_target_equals_each_targets_own_query(
    prometheus: PrometheusServer, history: History
) -> None:
    template = "sum(gpu_cache_usage_perc{${matchers}})"
    label_sets = [_labels(i) for i in range(TARGETS)] + [{"namespace": "nowhere", "model": "x"}]
    query, names = render_batch_query("gpu_cache_usage_perc", label_sets)
    assert names == ("namespace", "model")
    async with PrometheusSource(PrometheusSettings(url=prometheus.url)) as source:
        for start_offset in (6 * 3600.0, 0.0):  # a long first fetch (chunked), one point
            end = datetime.fromtimestamp(history.end, UTC)
            start = end - timedelta(seconds=start_offset)
            grouped = await source.fetch_range_grouped(query, names, start, end, STEP)
            assert not isinstance(grouped, RangeResult), grouped.message
            for labels in label_sets:
                own = await source.fetch_range(
                    render_query(template, {}, raw={"matchers": render_matchers(labels)}),
                    start,
                    end,
                    STEP,
                )
                batched = grouped.get(tuple(labels[n] for n in names))
                assert batched.status is own.status, labels
                assert batched.message == own.message
                assert batched.series_count == own.series_count
                np.testing.assert_array_equal(batched.timestamps, own.timestamps)
                np.testing.assert_array_equal(batched.values, own.values)
            # The decoys (which an unescaped regex would have matched) never leak in.
            for i, ns in enumerate(SPECIAL):
                values = grouped.get((ns, SPECIAL[ns])).values
                assert float(np.nanmax(values)) < 100.0, (i, ns)


# ---------------------------------------------------------------------------- controller


async def _run(
    kube_api: client.ApiClient,
    prometheus: PrometheusServer,
    history: History,
    *,
    batch: bool,
    workers: int,
    cycles: int,
    refit: str = "10m",
    prometheus_section: str = "",
) -> tuple[list[dict[str, tuple[object, ...]]], list[set[str]], Controller]:
    clock = FakeClock(datetime.fromtimestamp(history.end - (cycles + 1) * STEP, UTC))
    runner = ProcessFitRunner(workers) if workers else None
    controller = Controller(
        KubeClient(kube_api),
        prometheus_url=prometheus.url,
        clock=clock,
        dry_run=True,
        fit_runner=runner,
        batch_queries=batch,
    )
    controller.apply_config(parse_config(_config(refit, prometheus_section)))
    summaries: list[dict[str, tuple[object, ...]]] = []
    refitted: list[set[str]] = []
    try:
        for _cycle in range(1 + cycles):
            before = _fit_ids(controller)
            reports = await controller.run_due()
            after = _fit_ids(controller)
            refitted.append({t for t, fit in after.items() if before.get(t) != fit})
            assert len(reports) == TARGETS
            summaries.append(_summary(reports))
            clock.now += timedelta(seconds=STEP)
    finally:
        await controller.aclose()
        if runner is not None:
            runner.close()
    return summaries, refitted, controller


@pytest.mark.slow
async def test_batched_queries_and_pool_fits_decide_exactly_as_per_target_thread_fits(
    hpas: None, kube_api: client.ApiClient, prometheus: PrometheusServer, history: History
) -> None:
    requests_0 = _query_range_requests(prometheus)
    plain, _, _ = await _run(kube_api, prometheus, history, batch=False, workers=0, cycles=3)
    requests_1 = _query_range_requests(prometheus)
    fast, _, controller = await _run(kube_api, prometheus, history, batch=True, workers=1, cycles=3)
    requests_2 = _query_range_requests(prometheus)

    assert all(problem is None for cycle in fast for (_, _, problem, *_rest) in cycle.values())
    assert fast == plain  # every decision, forecast, model and buffer length, bit for bit
    assert controller.queries_batched > 0
    # Per target: usage + queue query each cycle (the queue metric is absent, so no running
    # query); batched: a handful per cycle for all twenty.
    assert requests_1 - requests_0 >= 2 * TARGETS * 4
    assert requests_2 - requests_1 <= 3 * 4 * 2


@pytest.mark.slow
async def test_a_steady_cycle_refits_only_the_targets_whose_staggered_refit_is_due(
    hpas: None, kube_api: client.ApiClient, prometheus: PrometheusServer, history: History
) -> None:
    cycles = REFIT_POINTS + 2
    _, refitted, controller = await _run(
        kube_api, prometheus, history, batch=True, workers=0, cycles=cycles
    )
    ids = {rec.target.id: rec for rec in controller.reconcilers.values()}
    assert refitted[0] == set(ids)  # the cold cycle fits everything
    offsets = {
        target: refit_offset(next(iter(rec._signals.values())).key, REFIT_POINTS)
        for target, rec in ids.items()
    }
    # A first fit counts as `offset` points old, so it refits after REFIT_POINTS - offset
    # more points, on cycle REFIT_POINTS - offset + 1; never two targets' worth of the whole
    # fleet at once, and every target within the refit interval.
    for cycle in range(1, cycles + 1):
        due = {t for t, offset in offsets.items() if cycle == REFIT_POINTS - offset + 1}
        assert refitted[cycle] == due, cycle
    assert max(len(r) for r in refitted[1:]) < TARGETS / 2
    assert set().union(*refitted[1 : REFIT_POINTS + 2]) == set(ids)


@pytest.mark.slow
async def test_the_first_history_arrives_when_each_query_must_answer_within_seconds(
    hpas: None, kube_api: client.ApiClient, prometheus: PrometheusServer, history: History
) -> None:
    """What the lookback repeats is told from new samples by a query a whole batch can afford.

    The first fetch reads the whole history of a batch of targets at once (here all twenty,
    2 days at 1 m). `timestamp()` over such a range costs Prometheus about a second per
    series; a freshness query built on it timed out for every batch of a large install, and
    a failed freshness query keeps the points out, so no target ever got its history."""
    # 2 s: the old timestamp() query for this batch took 2-3 s unloaded (it passed at 3 s and
    # failed at 2 s on the old code, load 0.8); the count_over_time one takes a fraction of
    # that, so a loaded machine still answers in time (1 s failed on the new code at load 10+).
    section = f"prometheus:\n  url: {prometheus.url}\n  timeout: 2s"
    summaries, _, _ = await _run(
        kube_api, prometheus, history, batch=True, workers=0, cycles=0, prometheus_section=section
    )
    (first,) = summaries
    problems = {t: s[2] for t, s in first.items() if s[2] is not None}
    assert not problems, problems
    points = {t: s[6] for t, s in first.items()}
    assert all(p == 2 * 1440 for p in points.values()), points  # 2 days at 1 m
