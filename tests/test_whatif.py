"""`backtest --config FILE --target NS/NAME`: the what-if on a user's own target (issue 13
item 5), against the real Prometheus.

The target's configured query reads backfilled per-pod series; the simulated scaling must be
exactly the backtest's on the same demand series (the live loop's demand: the sum over the
target's pods, corrected for queueing) with the target's policy as its settings.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.backtest import SimulationSettings, simulate_demand
from predictive_scaler.baselines import SweepSettings
from predictive_scaler.cli import main
from predictive_scaler.config import load_config_file, parse_config
from predictive_scaler.decision import DecisionPolicy
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    KubeClient,
)
from predictive_scaler.whatif import WhatIfError, WhatIfRequest, fetch_what_if, read_target_history
from tests.kube_double import KubeDouble, make_deployment, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series

STEP = 300.0
DAYS = 3
# Ends ten minutes ago: the trailing lookback copies are not new data and are cut off.
DATA_END = math.floor(time.time() / STEP) * STEP - 2 * STEP
TS = np.arange(DATA_END - DAYS * 86_400 + STEP, DATA_END + 1, STEP)
PODS = ("nim-0", "nim-1", "nim-2")


def _pod_series() -> tuple[list[Series], np.ndarray]:
    """Three pods of app=chat in namespace llm with a daily cycle and bursts of queueing, a
    pod of another app in the same namespace and a short-lived namespace; and the demand the
    live loop computes for the chat target, by hand."""
    rng = np.random.default_rng(13)
    series: list[Series] = []
    usage = np.zeros(TS.size)
    waiting = np.zeros(TS.size)
    running = np.zeros(TS.size)
    shape = 0.55 + 0.35 * np.sin(2 * np.pi * TS / 86_400)
    # Half-hour bursts at random times: the pods saturate and requests queue, so the
    # warm-up decides how long each policy is short.
    burst = np.zeros(TS.size, dtype=bool)
    for begin in rng.choice(TS.size - 6, size=4 * DAYS, replace=False):
        burst[begin : begin + 6] = True
    for pod in PODS:
        # Multiples of 1/64 and whole requests: sums are exact in any order, so Prometheus'
        # sum over the pods equals this one to the bit.
        level = np.where(burst, 1.0, shape + rng.normal(0, 0.05, TS.size))
        u = np.round(np.clip(level, 0.0, 1.0) * 64) / 64
        w = np.round(np.where(burst, rng.uniform(8, 16, TS.size), 0.0))
        r = np.round(4 + 8 * u)
        labels = {"namespace": "llm", "app": "chat", "pod": pod}
        series += [
            ("gpu_cache_usage_perc", labels, TS, u),
            ("num_requests_waiting", labels, TS, w),
            ("num_requests_running", labels, TS, r),
        ]
        usage, waiting, running = usage + u, waiting + w, running + r
    # Same namespace, another app: left out by the target's selector.
    other = {"namespace": "llm", "app": "batch", "pod": "batch-0"}
    series.append(("gpu_cache_usage_perc", other, TS, np.full(TS.size, 0.9)))
    # A namespace with half a day of data: too short for the what-if.
    young = TS[-144:]
    series.append(
        ("gpu_cache_usage_perc", {"namespace": "young", "pod": "p"}, young, 0.5 + 0 * young)
    )
    demand = usage * (1.0 + waiting / np.maximum(running, 1.0))
    return series, demand


SERIES, DEMAND = _pod_series()

CONFIG = """\
defaults:
  step: 5m
  model: seasonal_naive
  seasons: [daily]
targets:
  - hpa: {namespace: llm, name: chat}
    selector: {app: chat}
    warmup: %(warmup)s
    interval: 1m
    quantile: 0.8
    scaleUpStep: 2
    scaleDownDelay: 15m
    refitInterval: 2h
    history: 2d
    signals:
      - preset: nim
        targetPerPod: 0.6
  - hpa: {namespace: empty, name: chat}
  - hpa: {namespace: young, name: chat}
"""


def _settings(warmup_seconds: float) -> SimulationSettings:
    """The chat target's policy written out by hand, on its HPA (target 0.6, min 2, max 9)."""
    return SimulationSettings(
        target=0.6,
        peak_replicas=math.ceil(float(np.percentile(DEMAND, 99)) / 0.6 - 1e-9),
        min_replicas=2,
        max_replicas=9,
        warmup_seconds=warmup_seconds,
        cycle_seconds=60.0,
        model="seasonal_naive",
        quantile=0.8,
        seasons=("daily",),
        history_seconds=2 * 86_400.0,
        refit_interval_seconds=7_200.0,
        decision=DecisionPolicy(
            scale_up_step=2,
            scale_down_delay_seconds=900.0,
            scale_down_step=1,
            missing_data_hold_seconds=1800.0,
        ),
    )


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(SERIES)


def _config(tmp_path: Path, warmup: str = "5m") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG % {"warmup": warmup})
    return path


def _what_if(
    tmp_path: Path, prometheus: PrometheusServer, *extra: str, target: str = "llm/chat"
) -> tuple[int, Path]:
    out = tmp_path / "whatif.json"
    code = main(
        [
            "backtest",
            "--config",
            str(_config(tmp_path)),
            "--target",
            target,
            "--prometheus-url",
            prometheus.url,
            "--since",
            "4d",
            "--min-replicas",
            "2",
            "--max-replicas",
            "9",
            "--only",
            "scaling",
            "--quiet",
            "--json",
            str(out),
            *extra,
        ]
    )
    return code, out


def _figures(settings: SimulationSettings) -> dict[str, object]:
    result = simulate_demand(DEMAND, STEP, settings, sweep=SweepSettings())
    return {
        "scaling": {name: run.figures() for name, run in result.runs.items()},
        "frontier": {
            name: [[p.gpu_hours, p.underprovisioned_minutes] for p in points]
            for name, points in result.frontier.items()
        },
    }


def test_what_if_replays_the_targets_demand_with_its_policy(
    tmp_path: Path, prometheus: PrometheusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _what_if(tmp_path, prometheus)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads(out.read_text())
    assert report["target"]["query"] == 'sum(gpu_cache_usage_perc{namespace="llm",app="chat"})'
    assert report["points"] == DEMAND.size
    assert report["step_seconds"] == STEP
    expected = _figures(_settings(300.0))
    # Exactly the backtest on the same demand series with the target's settings.
    assert report["scaling"] == expected["scaling"]
    assert report["frontier"] == expected["frontier"]
    assert report["scaling_settings"]["warmup_seconds"] == 300.0
    assert report["scaling_settings"]["scale_up_step"] == 2
    assert set(report["iso_cost"]) == {"hpa_target", "static_floor", "hour_of_week", "phpa"}
    assert "at predictive's" in printed.out


def test_the_targets_warmup_reaches_the_simulation(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    # Failing-first: a what-if that ran on the default policy (10m) would report these.
    default = _figures(_settings(600.0))["scaling"]
    assert default != _figures(_settings(300.0))["scaling"], "pick data the warm-up matters on"
    code, out = _what_if(tmp_path, prometheus)
    assert code == 0
    scaling = json.loads(out.read_text())["scaling"]
    assert scaling != default, "the target's warmup: 5m did not reach the simulation"
    # A flag given explicitly wins over the target's policy.
    code, out = _what_if(tmp_path, prometheus, "--warmup", "10m")
    assert code == 0
    assert json.loads(out.read_text())["scaling"] == default


def test_an_unknown_target_is_named_with_the_known_ones(
    tmp_path: Path, prometheus: PrometheusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _what_if(tmp_path, prometheus, target="llm/nope")
    assert code == 1
    err = capsys.readouterr().err
    assert "no target 'llm/nope' in the configuration" in err
    assert "llm/chat" in err


def test_no_series_names_the_query(
    tmp_path: Path, prometheus: PrometheusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _what_if(tmp_path, prometheus, target="empty/chat")
    assert code == 1
    err = capsys.readouterr().err
    assert 'no data: the query sum(gpu_cache_usage_perc{namespace="empty"}) returned no' in err


def test_too_short_a_history_names_the_query_and_the_need(
    tmp_path: Path, prometheus: PrometheusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _what_if(tmp_path, prometheus, target="young/chat")
    assert code == 1
    err = capsys.readouterr().err
    assert 'too short: the query sum(gpu_cache_usage_perc{namespace="young"})' in err
    assert "needs at least 2d" in err


def test_unreachable_prometheus_names_the_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "backtest",
            "--config",
            str(_config(tmp_path)),
            "--target",
            "llm/chat",
            "--prometheus-url",
            "http://127.0.0.1:9",
            "--quiet",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "prometheus error" in err
    assert 'sum(gpu_cache_usage_perc{namespace="llm",app="chat"})' in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "llm/chat"], "--target NAMESPACE/NAME needs --config"),
        (["--config", "c.yaml"], "--config needs --target NAMESPACE/NAME"),
        (
            ["--config", "c.yaml", "--target", "a/b", "--peak-replicas", "3"],
            "--peak-replicas scales a trace",
        ),
        (["--signal", "rps"], "--signal needs --config and --target"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_long_read_shows_progress_a_day_at_a_time(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    config = load_config_file(_config(tmp_path))
    calls: list[tuple[int, int]] = []
    request = WhatIfRequest("llm/chat", since_seconds=4 * 86_400.0, prometheus_url=prometheus.url)
    history = read_target_history(config, request, progress=lambda *c: calls.append(c))
    total = 4 * 288 + 1
    assert calls == [(min(k * 288, total), total) for k in range(1, 6)]
    assert history.demand.tolist() == DEMAND.tolist()
    assert history.start.timestamp() == TS[0]


def test_an_unknown_signal_is_named_with_the_known_ones(
    tmp_path: Path, prometheus: PrometheusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _what_if(tmp_path, prometheus, "--signal", "rps")
    assert code == 1
    assert "target llm/chat has no signal 'rps' (signals: kv_cache)" in capsys.readouterr().err


CLUSTER_CONFIG = """\
defaults:
  step: 5m
  model: seasonal_naive
  seasons: [daily]
targets:
  - hpa: {namespace: llm, name: chat}
    warmup: 5m
    interval: 1m
    quantile: 0.8
    scaleUpStep: 2
    scaleDownDelay: 15m
    refitInterval: 2h
    history: 2d
"""


async def test_with_a_cluster_the_hpa_gives_base_max_target_and_pods(
    prometheus: PrometheusServer, kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    # The controller raised minReplicas to 5; the user's base (2) is what the what-if uses.
    annotations = {ANNOTATION_BASE_MIN_REPLICAS: "2", ANNOTATION_APPLIED_MIN_REPLICAS: "5"}
    kube_server.put_object(make_hpa("llm", "chat", 5, 9, "600m", annotations=annotations))
    kube_server.put_object(make_deployment("llm", "chat", {"app": "chat"}))
    config = parse_config(CLUSTER_CONFIG)
    request = WhatIfRequest("llm/chat", since_seconds=4 * 86_400.0, prometheus_url=prometheus.url)
    history = await asyncio.wait_for(
        fetch_what_if(config, request, kube=KubeClient(kube_api)), timeout=60
    )
    assert history.query == 'sum(gpu_cache_usage_perc{namespace="llm",app="chat"})'
    assert history.settings == _settings(300.0)
    assert history.demand.tolist() == DEMAND.tolist()
    # Flags still win over the HPA.
    flagged = replace(request, min_replicas=3, hpa_target=0.5)
    history = await asyncio.wait_for(
        fetch_what_if(config, flagged, kube=KubeClient(kube_api)), timeout=60
    )
    assert (history.settings.min_replicas, history.settings.target) == (3, 0.5)
    assert history.settings.max_replicas == 9


async def test_a_missing_hpa_names_it(
    prometheus: PrometheusServer, kube_api: client.ApiClient
) -> None:
    request = WhatIfRequest("llm/chat", prometheus_url=prometheus.url)
    with pytest.raises(WhatIfError, match="reading HorizontalPodAutoscaler llm/chat failed"):
        await asyncio.wait_for(
            fetch_what_if(parse_config(CLUSTER_CONFIG), request, kube=KubeClient(kube_api)),
            timeout=60,
        )


def test_an_unreadable_kubeconfig_is_one_line(
    tmp_path: Path, prometheus: PrometheusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _what_if(tmp_path, prometheus, "--kubeconfig", str(tmp_path / "missing"))
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no cluster: ") and err.count("\n") == 1, err
