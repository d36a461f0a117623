"""The controller process: ConfigMap reload, leader election, /metrics, SIGTERM and restore."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import structlog
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.kube import KubeClient
from predictive_scaler.leader import LeaderElector
from predictive_scaler.logs import configure_logging
from predictive_scaler.reconcile import MANAGED_ANNOTATIONS
from predictive_scaler.runtime import Controller, RunOptions, run_controller
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
from tests.test_reconcile import CONFIG, DATA_END, flat_series, hpa, min_replicas

BUSY_ONLY = CONFIG.split("  - hpa: {namespace: idle")[0]


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


async def test_follower_never_patches_and_a_lost_lease_stops_patching(
    kube_server: KubeDouble, kube: KubeClient, prometheus: PrometheusServer, clock: FakeClock
) -> None:
    stored = kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    other = LeaderElector(kube, "ops", "predictive-scaler", "other", clock=clock)
    assert await other.try_acquire_or_renew()
    me = LeaderElector(kube, "ops", "predictive-scaler", "me", clock=clock)
    controller = Controller(kube, prometheus_url=prometheus.url, clock=clock, elector=me)
    try:
        controller.apply_config(parse_config(BUSY_ONLY))
        assert not await controller.renew_leadership()
        [report] = await controller.run_due()
        assert report.recommended == 3 and report.patch_result == "dry_run"
        after = hpa(kube_server, "busy")
        assert after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]  # type: ignore[index]
        assert kube_server.list_events() == []
        text = controller.metrics.generate_latest().decode()
        assert 'predictive_scaler_patches_total{result="dry_run",target="busy/nim"} 1.0' in text
        assert "predictive_scaler_is_leader 0.0" in text

        # The other holder goes away: after expiry we lead, and patch.
        clock.advance(60)
        assert await controller.renew_leadership()
        assert controller.may_patch()
        # Without a renewal, leadership ends one renew period before the lease expires.
        clock.advance(me.lease_duration_seconds - me.renew_period_seconds)
        assert not controller.may_patch()
    finally:
        await controller.aclose()


async def test_a_lease_that_lapses_through_renewal_errors_logs_leadership_lost(
    kube_server: KubeDouble, kube: KubeClient, prometheus: PrometheusServer, clock: FakeClock
) -> None:
    me = LeaderElector(kube, "ops", "predictive-scaler", "me", clock=clock)
    controller = Controller(kube, prometheus_url=prometheus.url, clock=clock, elector=me)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await controller.renew_leadership()
            kube_server.fail_next("GET", r"/leases/", 503, times=100)
            kube_server.fail_next("PUT", r"/leases/", 503, times=100)
            for _ in range(4):  # renewals fail; the lease runs out on our clock meanwhile
                clock.advance(me.renew_period_seconds)
                await controller.renew_leadership()
        assert not controller.may_patch()
        events = [e["event"] for e in logs if e["event"].startswith("leadership_")]
        assert events == ["leadership_acquired", "leadership_lost"]
    finally:
        await controller.aclose()


async def test_run_reloads_config_map_serves_metrics_and_restores_on_sigterm(
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": BUSY_ONLY}))
    kube_server.put_object(make_hpa("busy", "nim", 2, 10))
    options = run_options(kube_server, prometheus.url, tmp_path, monkeypatch, restore_on_exit=True)
    sleeper = QuiescentSleeper(clock)
    async with running_controller(
        options, clock=clock, sleeper=sleeper, install_signal_handlers=True
    ) as running:
        controller = running.controller
        await eventually(lambda: min_replicas(kube_server, "busy") == 3)
        # The patch lands mid-cycle; the Event and the gauges follow before the cycle ends.
        await eventually(lambda: controller.health.ready)

        base_url = f"http://127.0.0.1:{controller.metrics_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base_url}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                text = await response.text()
            for path in ("/healthz", "/readyz"):
                async with session.get(base_url + path) as response:
                    assert response.status == 200, path
        for name in (
            "predictive_scaler_forecast_mean{",
            "predictive_scaler_forecast_upper{",
            "predictive_scaler_recommended_min_replicas{",
            "predictive_scaler_applied_min_replicas{",
            "predictive_scaler_base_min_replicas{",
            "predictive_scaler_data_ok{",
            "predictive_scaler_cycle_duration_seconds_bucket",
            "predictive_scaler_patches_total{",
            "predictive_scaler_config_valid 1.0",
            'predictive_scaler_config_reloads_total{result="applied"}',
            "predictive_scaler_is_leader 1.0",
            "predictive_scaler_targets 1.0",
        ):
            assert name in text, name

        # A bad ConfigMap: the last good config stays, config_valid 0, a Warning Event.
        good = controller.config
        bad = BUSY_ONLY.replace("scaleDownDelay: 10m", "scaleDownDelay: -3")
        kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": bad}))
        await eventually(lambda: bool(kube_server.list_events("ops")))
        [event] = kube_server.list_events("ops")
        assert event["type"] == "Warning" and event["reason"] == "ConfigRejected"
        assert event["involvedObject"]["kind"] == "ConfigMap"
        assert "defaults.scaleDownDelay" in event["message"]
        assert controller.config is good
        assert "predictive_scaler_config_valid 0.0" in controller.metrics.generate_latest().decode()
        # ...and a good one again is taken.
        kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": BUSY_ONLY + "\n"}))
        await eventually(lambda: controller.metrics.config_valid._value.get() == 1)

        os.kill(os.getpid(), signal.SIGTERM)
        assert await running.exit_code() == 0
    stored = hpa(kube_server, "busy")
    assert stored["spec"]["minReplicas"] == 2  # type: ignore[index]
    annotations = stored["metadata"].get("annotations") or {}  # type: ignore[attr-defined]
    assert not set(MANAGED_ANNOTATIONS) & set(annotations)
    lease = kube_server.get_object("coordination.k8s.io/v1", "Lease", "ops", "predictive-scaler")
    assert lease is not None and not lease["spec"].get("holderIdentity")  # released


async def test_run_exits_2_on_a_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("defaults: {interval: nope}\n")
    assert (
        await run_controller(RunOptions(config_file=str(path)), install_signal_handlers=False) == 2
    )
    assert (
        await run_controller(
            RunOptions(config_file=str(path), config_map="a/b"), install_signal_handlers=False
        )
        == 2
    )


async def test_run_exits_2_without_a_prometheus_url(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BUSY_ONLY)  # valid, but names no prometheus.url
    options = RunOptions(config_file=str(path), log_format="json")
    try:
        assert await run_controller(options, install_signal_handlers=False) == 2
    finally:
        configure_logging("auto", force=True)
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line]
    [rejected] = [line for line in lines if line["event"] == "config_rejected"]
    assert rejected["error"] == "prometheus.url missing and no --prometheus-url", rejected
