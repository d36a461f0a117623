"""What validates also applies: a configuration that passes validation never fails when the
controller takes it, and whatever still fails at apply is a rejected configuration (Event,
``config_valid`` 0, the last good one kept), never a dead reload."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import ConfigError, parse_config
from predictive_scaler.runtime import Controller
from tests.chaos import PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_hpa
from tests.support import closing_controller
from tests.test_faults_kube import CONFIG, NS, flat_demand, inline


def _with_prometheus(url: str, extra: str) -> str:
    return f"prometheus:\n  url: {url}\n{extra}" + CONFIG


@pytest.fixture
async def prometheus() -> AsyncIterator[PrometheusFaultProxy]:
    async with PrometheusFaultProxy(series=flat_demand) as fake:
        yield fake


@pytest.fixture
async def controller(
    kube_api: client.ApiClient, prometheus: PrometheusFaultProxy
) -> AsyncIterator[Controller]:
    async with closing_controller(kube_api, fit_runner=inline) as made:
        yield made


CA_WITHOUT_VERIFY = "  caBundle: /etc/ssl/prometheus-ca.pem\n  verifyTls: false\n"


def test_validation_rejects_a_ca_bundle_without_verification() -> None:
    """`validate-config` and the controller agree: the PrometheusSource refuses this pair,
    so validation must too, naming the field, the value and the rule."""
    with pytest.raises(ConfigError) as caught:
        parse_config(_with_prometheus("https://prom.example:9090", CA_WITHOUT_VERIFY))
    message = str(caught.value)
    assert "prometheus.caBundle" in message, message
    assert "/etc/ssl/prometheus-ca.pem" in message, message
    assert "verifyTls" in message, message


async def test_a_config_that_fails_at_apply_is_rejected_and_the_next_good_one_taken(
    kube_server: KubeDouble,
    controller: Controller,
    prometheus: PrometheusFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    good_text = _with_prometheus(prometheus.url, "")
    assert await controller.load_config_text(good_text)
    good = controller.config

    # Whatever apply still finds wrong (here the Prometheus settings refuse the URL after
    # validation passed it) is a rejection, not an exception out of the watch task.
    from predictive_scaler import source_switch

    def refuse(*_args: object, **_kwargs: object) -> object:
        raise ValueError("url must be an http(s) URL with a host")

    monkeypatch.setattr(source_switch, "PrometheusSource", refuse)
    changed = _with_prometheus(prometheus.url + "/other", "")
    assert not await controller.load_config_text(changed)
    assert controller.config is good
    [event] = kube_server.list_events("ops")
    assert event["reason"] == "ConfigRejected", event
    assert "url must be an http(s) URL" in event["message"], event["message"]
    assert "predictive_scaler_config_valid 0.0" in controller.metrics.generate_latest().decode()
    [report] = await controller.run_due(force=True)
    assert report.error is None and report.recommended == 3  # the old config still runs

    monkeypatch.undo()
    assert await controller.load_config_text(changed)
    assert controller.config is not None and controller.config is not good
    assert "predictive_scaler_config_valid 1.0" in controller.metrics.generate_latest().decode()


async def test_the_ca_bundle_case_is_rejected_by_the_controller_with_an_event(
    kube_server: KubeDouble, controller: Controller, prometheus: PrometheusFaultProxy
) -> None:
    """The reported case end to end: it used to raise ValueError out of the reload."""
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    assert await controller.load_config_text(_with_prometheus(prometheus.url, ""))
    good = controller.config
    https = prometheus.url.replace("http://", "https://")
    assert not await controller.load_config_text(_with_prometheus(https, CA_WITHOUT_VERIFY))
    assert controller.config is good
    [event] = kube_server.list_events("ops")
    assert "prometheus.caBundle" in event["message"], event["message"]
    assert "predictive_scaler_config_valid 0.0" in controller.metrics.generate_latest().decode()
