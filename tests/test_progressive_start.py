"""Progressive cold start (issue 10 item 4), through ``run`` as shipped.

The finding: a target's first cycle waited for its configured model's first fit, so at a
thousand targets the first decisions came minutes after start (563 s for the cold cycle at
load 4), and a restart during a ramp left every target unmanaged that long. Now a cheap
model decides in the first cycle and the configured one replaces it when its fit lands.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models import FitResult
from predictive_scaler import forecasting
from predictive_scaler.signal_fitter import CHEAP_FIRST_MODEL
from tests.kube_double import KubeDouble, make_configmap, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import FakeClock, QuiescentSleeper, eventually, run_options, running_controller
from tests.test_reconcile import DATA_END, flat_series

CONFIG = """\
defaults: {interval: 5m, step: 5m, history: 1d, minHistory: 1h, warmup: 10m,
           model: holt_winters, seasons: [], refitInterval: 1h, staleAfter: 15m}
targets:
  - hpa: {namespace: busy, name: nim}
  - hpa: {namespace: idle, name: nim}
"""


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


@pytest.fixture
def slow_full_fits(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every fit but the cheap one waits until the test lets it go (at most a minute)."""
    release = threading.Event()
    real = forecasting.fit_compact

    def fit(name: str, *args: Any, **kwargs: Any) -> FitResult:
        if name != CHEAP_FIRST_MODEL:
            release.wait(60)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(forecasting, "fit_compact", fit)
    yield release
    release.set()


async def test_the_first_decision_does_not_wait_for_the_configured_models_fit(
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    slow_full_fits: threading.Event,
) -> None:
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": CONFIG}))
    for namespace in ("busy", "idle"):
        kube_server.put_object(make_hpa(namespace, "nim", 1, 10))
    sleeper = QuiescentSleeper(clock)
    options = run_options(kube_server, prometheus.url, tmp_path, monkeypatch, dry_run=True)
    keys = [("busy", "nim"), ("idle", "nim")]
    async with running_controller(options, clock=clock, sleeper=sleeper) as running:
        reports = running.controller.last_reports

        def models() -> list[str | None]:
            return [r.signals[0].model if (r := reports.get(k)) else None for k in keys]

        try:
            await eventually(lambda: all(models()), 10)
        except TimeoutError:
            raise AssertionError(
                f"no decision while the configured model's fit ran: models {models()}"
            ) from None
        # The stand-in is seasonal_naive, which falls back to persistence without seasons.
        assert models() == ["persistence", "persistence"]
        busy = reports[("busy", "nim")]
        assert busy.recommended == 3 and busy.signals[0].problem is None  # 1.8 at 0.7 a pod

        slow_full_fits.set()
        await eventually(lambda: models() == ["holt_winters", "holt_winters"], 30)
        assert reports[("busy", "nim")].recommended == 3
        assert await running.stop() == 0
