"""Gauges on a private registry, label-set removal, and the HTTP endpoints."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST

from predictive_scaler.publish import (
    ControllerMetrics,
    HealthState,
    SignalFigures,
    TargetFigures,
    bound_port,
    make_app,
    start_http_server,
)


def figures(target: str = "llm/nim", signals: tuple[str, ...] = ("kv_cache",)) -> TargetFigures:
    return TargetFigures(
        target=target,
        namespace="llm",
        hpa="nim",
        recommended_min_replicas=4,
        applied_min_replicas=4,
        base_min_replicas=1,
        signals=tuple(
            SignalFigures(name, True, 660.0, 0.9, mean=2.0, upper=2.6, abs_error=0.1, coverage=0.9)
            for name in signals
        ),
    )


def test_publish_and_remove_target() -> None:
    metrics = ControllerMetrics()
    metrics.publish_target(figures(signals=("kv_cache", "rps")))
    text = metrics.generate_latest().decode()
    [upper] = [
        line
        for line in text.splitlines()
        if line.startswith("predictive_scaler_forecast_upper{") and 'signal="kv_cache"' in line
    ]
    for part in ('horizon_seconds="660"', 'quantile="0.9"', 'target="llm/nim"', 'hpa="nim"'):
        assert part in upper
    assert upper.endswith(" 2.6")
    assert "predictive_scaler_recommended_min_replicas{" in text
    # A signal dropped from the target loses its series; a removed target loses all.
    metrics.publish_target(figures())
    assert 'signal="rps"' not in metrics.generate_latest().decode()
    metrics.remove_target("llm/nim")
    assert 'target="llm/nim"' not in metrics.generate_latest().decode()


def test_registry_is_private() -> None:
    a, b = ControllerMetrics(), ControllerMetrics()  # no "Duplicated timeseries" error
    a.set_leader(True)
    assert "predictive_scaler_is_leader 0.0" in b.generate_latest().decode()


async def test_endpoints_over_http() -> None:
    now = [100.0]
    health = HealthState(max_tick_age_seconds=30, monotonic=lambda: now[0])
    metrics = ControllerMetrics()
    metrics.set_config_valid(True)
    runner = await start_http_server(make_app(metrics, health), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        async with aiohttp.ClientSession() as session:

            async def status(path: str) -> int:
                async with session.get(url + path) as response:
                    await response.read()
                    return response.status

            assert (await status("/healthz"), await status("/readyz")) == (503, 503)
            health.tick()
            health.config_loaded = True
            health.first_cycle_done = True
            assert (await status("/healthz"), await status("/readyz")) == (200, 200)
            now[0] += 31  # the loop stopped ticking
            assert await status("/healthz") == 503
            async with session.get(url + "/metrics") as response:
                assert "predictive_scaler_config_valid 1.0" in await response.text()
                assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    finally:
        await runner.cleanup()


def test_live_window_peak_coverage_has_its_own_gauge() -> None:
    # The decision takes the window-peak bound, so its live coverage is published next to
    # the per-step one, per signal, and withdrawn with the signal.
    metrics = ControllerMetrics()
    sig = SignalFigures("kv_cache", True, 660.0, 0.9, coverage=0.91, peak_coverage=0.88)
    metrics.publish_target(replace(figures(), signals=(sig,)))
    lines = metrics.generate_latest().decode().splitlines()
    [peak] = [s for s in lines if s.startswith("predictive_scaler_forecast_peak_coverage{")]
    assert 'signal="kv_cache"' in peak and 'target="llm/nim"' in peak
    assert peak.endswith(" 0.88")
    assert any(s.startswith("predictive_scaler_forecast_coverage{") for s in lines)
    [stored] = metrics.published("predictive_scaler_forecast_peak_coverage")
    assert (stored.value, stored.labels["signal"]) == (0.88, "kv_cache")
    # None (no window has come due yet) leaves it unset.
    metrics.publish_target(replace(figures(), signals=(replace(sig, peak_coverage=None),)))
    assert "predictive_scaler_forecast_peak_coverage{" not in metrics.generate_latest().decode()
