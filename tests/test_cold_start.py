"""A fresh install forecasts with what its history allows (issue 12 item 3).

With the default ``history: 7d``, time before the first sample is not missing data: from
``minHistory`` on the non-seasonal models decide, seasonal ones join once the history holds
their season, and a model that cannot fit yet says why in ``describe()``. Real Prometheus,
the API double, the default ``auto`` model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import Target, parse_config
from predictive_scaler.kube import KubeClient
from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
from predictive_scaler.reconcile import TargetReconciler
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import FakeClock

STEP = 300.0
DATA_END = math.floor(time.time() / STEP) * STEP - STEP
AGES = {"fresh12h": 0.5, "fresh2d": 2.0, "fresh4d": 4.0}
"""Namespace: days of history since the install."""


def daily_load() -> list[Series]:
    series: list[Series] = []
    rng = np.random.default_rng(12)
    for namespace, days in AGES.items():
        ts = np.arange(DATA_END - days * 86_400 + STEP, DATA_END + 1, STEP)
        shape = 0.5 + 0.3 * np.sin(2 * np.pi * ts / 86_400)
        for pod in ("nim-0", "nim-1"):
            values = np.round(shape + rng.normal(0, 0.01, ts.size), 4)
            series.append(
                ("gpu_cache_usage_perc", {"namespace": namespace, "pod": pod}, ts, values)
            )
    return series


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(daily_load())


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    src = PrometheusSource(PrometheusSettings(url=prometheus.url, timeout_seconds=10.0))
    yield src
    src.close()


def fresh_target(namespace: str) -> Target:
    # Defaults except the step (cheaper fits) and minHistory, below the 12 hours of the
    # youngest install: history stays 7d, the model auto, the seasons daily and weekly.
    [found] = parse_config(
        f"""
defaults: {{step: 5m, interval: 5m, minHistory: 6h}}
targets:
  - hpa: {{namespace: {namespace}, name: nim}}
    signals: [{{preset: nim, queueQuery: null, runningQuery: null}}]
"""
    ).targets
    return found


@pytest.mark.parametrize("namespace", list(AGES))
async def test_a_fresh_install_forecasts_with_the_history_it_has(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    source: PrometheusSource,
    namespace: str,
) -> None:
    kube_server.put_object(make_hpa(namespace, "nim", 1, 10))
    kube = KubeClient(kube_api, reporting_instance="test")
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))
    reconciler = TargetReconciler(fresh_target(namespace), source, kube, clock=clock)
    assert reconciler.settings.history_seconds == 7 * 86_400.0
    report = await reconciler.reconcile()
    signal = report.signals[0]
    assert signal.problem is None, signal.problem
    assert signal.upper_max is not None and math.isfinite(signal.upper_max)
    assert report.recommended is not None and report.recommended >= 1
    model = reconciler._signals["kv_cache"].forecaster.model
    assert model is not None
    info = model.describe()
    skipped = info.get("skipped", {})
    if AGES[namespace] < 1:
        # Under a day: nothing seasonal has seen its season; each says why.
        assert not str(info["model"]).endswith(("seasonal_naive", "mstl"))
        assert "mstl" in skipped and "needs" in skipped["mstl"]
    if AGES[namespace] == 2:
        # Two days: MSTL needs two seasons plus its walk-forward window; it waits, saying so.
        assert "needs" in skipped.get("mstl", "")
    if AGES[namespace] >= 4:
        assert "mstl" not in skipped  # the daily season has joined
