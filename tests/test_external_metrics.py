"""The built-in External Metrics API: a real HTTPS client against the server, with a
certificate made for the test, over values the controller published.

The client trusts only that certificate and checks the host name, as the Kubernetes API
aggregator does with the APIService's ``caBundle`` and the Service's DNS name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from predictive_scaler.cli import build_parser
from predictive_scaler.delegated_auth import DelegatedAuth
from predictive_scaler.external_metrics import (
    GROUP,
    GROUP_VERSION,
    METRIC_NAMES,
    ExternalMetricsServer,
    SelectorError,
    format_quantity,
    parse_label_selector,
    selector_matches,
)
from predictive_scaler.kube import KubeClient
from predictive_scaler.publish import ControllerMetrics, SignalFigures, TargetFigures
from predictive_scaler.runtime import RunOptions, run_controller
from tests.deploy_support import find_object, render
from tests.kube_double import KubeDouble, make_hpa
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import (
    FakeClock,
    QuiescentSleeper,
    eventually,
    run_options,
    running_controller,
)
from tests.test_reconcile import CONFIG, DATA_END, flat_series

SERVICE_DNS = "predictive-scaler.predictive-scaler.svc"
"""The name the aggregator checks the certificate against (``<service>.<namespace>.svc``)."""
BASE = f"/apis/{GROUP_VERSION}"
AT = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


# ---------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """Trusts this certificate only, host name checked."""
        context = ssl.create_default_context(cafile=str(self.cert_file))
        assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
        return context


def make_certificate(directory: Path, common_name: str = SERVICE_DNS) -> Certificate:
    """A self-signed ECDSA P-256 serving certificate for the Service's DNS names (what the
    overlay's cert-manager Certificate asks for), with ``cryptography`` when importable, else
    the ``openssl`` command."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    names = [common_name, f"{common_name}.cluster.local"]
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        san = ",".join(f"DNS:{name}" for name in names)
        subprocess.run(
            [
                "/usr/bin/openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={common_name}",
                "-addext",
                f"subjectAltName={san}",
                "-keyout",
                str(key_file),
                "-out",
                str(cert_file),
            ],
            check=True,
            capture_output=True,
        )
        return Certificate(cert_file, key_file)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Certificate(cert_file, key_file)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


# ---------------------------------------------------------------------------- published values


def published_metrics() -> ControllerMetrics:
    """Two targets in ``nim`` (one with two signals) and one in ``llm``."""
    metrics = ControllerMetrics()

    def signal(name: str, mean: float, upper: float) -> SignalFigures:
        return SignalFigures(name, True, 900.0, 0.9, mean=mean, upper=upper)

    metrics.publish_target(
        TargetFigures(
            "nim/llama",
            "nim",
            "llama",
            4,
            4,
            1,
            (signal("kv_cache", 1.9, 2.35), signal("requests", 40.0, 55.5)),
            at=AT,
        )
    )
    metrics.publish_target(
        TargetFigures("nim/mistral", "nim", "mistral", 2, 2, 2, (signal("kv_cache", 0.5, 0.7),), AT)
    )
    metrics.publish_target(
        TargetFigures("llm/chat", "llm", "chat", 7, 7, 1, (signal("kv_cache", 4.0, 4.9),), AT)
    )
    return metrics


READER_TOKEN = "metrics-reader-token"
READER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"


def allow_reader(double: KubeDouble) -> None:
    """A caller (``READER_TOKEN``) the API double authenticates (TokenReview) and RBAC lets
    read every metric of the group and its discovery (SubjectAccessReview)."""
    double.add_token(READER_TOKEN, READER)
    double.bind(
        [
            {"apiGroups": [GROUP], "resources": ["*"], "verbs": ["list"]},
            {"nonResourceURLs": ["/apis", "/apis/*"], "verbs": ["get"]},
        ],
        user=READER,
    )


@pytest.fixture
async def server(
    certificate: Certificate, kube_server: KubeDouble, kube_api: client.ApiClient
) -> AsyncIterator[ExternalMetricsServer]:
    allow_reader(kube_server)
    started = ExternalMetricsServer(
        published_metrics(),
        str(certificate.cert_file),
        str(certificate.key_file),
        auth=DelegatedAuth(KubeClient(kube_api), skip_lookup=True),
        host="127.0.0.1",
        port=0,
    )
    await started.start()
    try:
        yield started
    finally:
        await started.close()
        await started.close()  # twice is safe


class Client:
    """HTTPS to 127.0.0.1, verifying the certificate against the Service's DNS name, with the
    reader's bearer token."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        port: int,
        context: ssl.SSLContext,
        token: str | None = READER_TOKEN,
    ):
        self.session = session
        self.port = port
        self.context = context
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        async with (
            asyncio.timeout(10),
            self.session.get(
                f"https://127.0.0.1:{self.port}{path}",
                params=params,
                headers=self.headers,
                ssl=self.context,
                server_hostname=SERVICE_DNS,
            ) as response,
        ):
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


@pytest.fixture
async def https(server: ExternalMetricsServer, certificate: Certificate) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, server.port, certificate.client_context())


def _by_hpa_signal(body: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(i["metricLabels"]["hpa"], i["metricLabels"].get("signal", "")) for i in body["items"]}


# ---------------------------------------------------------------------------- the API


class TestDiscovery:
    async def test_api_resource_list(self, https: Client) -> None:
        status, body = await https.get(BASE)
        assert status == 200
        assert body["kind"] == "APIResourceList"
        assert body["groupVersion"] == "external.metrics.k8s.io/v1beta1"
        assert [r["name"] for r in body["resources"]] == [
            "predictive_scaler_forecast_upper",
            "predictive_scaler_forecast_mean",
            "predictive_scaler_recommended_min_replicas",
        ]
        for resource in body["resources"]:
            assert resource["namespaced"] is True
            assert resource["verbs"] == ["get"]
            assert resource["kind"] == "ExternalMetricValueList"

    async def test_api_group_and_health(self, https: Client) -> None:
        status, body = await https.get("/apis/external.metrics.k8s.io")
        assert status == 200 and body["kind"] == "APIGroup"
        assert body["preferredVersion"]["groupVersion"] == GROUP_VERSION
        assert await https.get("/healthz") == (200, "ok\n")


class TestValues:
    async def test_value_list_is_what_the_controller_published(self, https: Client) -> None:
        status, body = await https.get(
            f"{BASE}/namespaces/nim/predictive_scaler_forecast_upper",
            labelSelector="hpa=llama,signal=kv_cache",
        )
        assert status == 200
        assert body["kind"] == "ExternalMetricValueList"
        assert body["apiVersion"] == "external.metrics.k8s.io/v1beta1"
        assert body["items"] == [
            {
                "metricName": "predictive_scaler_forecast_upper",
                "metricLabels": {
                    "target": "nim/llama",
                    "target_namespace": "nim",
                    "hpa": "llama",
                    "signal": "kv_cache",
                    "horizon_seconds": "900",
                    "quantile": "0.9",
                },
                "timestamp": "2025-03-04T05:06:07Z",
                "value": "2350m",
            }
        ]

    async def test_each_metric(self, https: Client) -> None:
        _, mean = await https.get(f"{BASE}/namespaces/nim/predictive_scaler_forecast_mean")
        assert {(i["metricLabels"]["hpa"], i["value"]) for i in mean["items"]} == {
            ("llama", "1900m"),
            ("llama", "40"),
            ("mistral", "500m"),
        }
        _, replicas = await https.get(
            f"{BASE}/namespaces/llm/predictive_scaler_recommended_min_replicas"
        )
        [item] = replicas["items"]
        assert item["value"] == "7"
        assert item["metricLabels"] == {
            "target": "llm/chat",
            "target_namespace": "llm",
            "hpa": "chat",
        }

    @pytest.mark.parametrize(
        ("selector", "expected"),
        [
            ("", {("llama", "kv_cache"), ("llama", "requests"), ("mistral", "kv_cache")}),
            ("hpa=llama", {("llama", "kv_cache"), ("llama", "requests")}),
            ("hpa==mistral", {("mistral", "kv_cache")}),
            ("hpa!=llama", {("mistral", "kv_cache")}),
            ("signal in (requests, other)", {("llama", "requests")}),
            ("signal notin (kv_cache)", {("llama", "requests")}),
            (
                "hpa in (llama,mistral),signal=kv_cache",
                {("llama", "kv_cache"), ("mistral", "kv_cache")},
            ),
            (
                "quantile=0.9,horizon_seconds=900",
                {("llama", "kv_cache"), ("llama", "requests"), ("mistral", "kv_cache")},
            ),
            ("quantile", {("llama", "kv_cache"), ("llama", "requests"), ("mistral", "kv_cache")}),
            ("!quantile", set()),
            ("owner", set()),
            ("!owner,hpa=mistral", {("mistral", "kv_cache")}),
            ("owner!=x,hpa=mistral", {("mistral", "kv_cache")}),
            (
                "horizon_seconds>600",
                {("llama", "kv_cache"), ("llama", "requests"), ("mistral", "kv_cache")},
            ),
            ("horizon_seconds<600", set()),
            ("hpa=chat", set()),  # another namespace's target
        ],
    )
    async def test_label_selectors(
        self, https: Client, selector: str, expected: set[tuple[str, str]]
    ) -> None:
        status, body = await https.get(
            f"{BASE}/namespaces/nim/predictive_scaler_forecast_upper", labelSelector=selector
        )
        assert status == 200
        assert _by_hpa_signal(body) == expected

    async def test_a_namespace_without_targets_has_no_items(self, https: Client) -> None:
        status, body = await https.get(
            f"{BASE}/namespaces/default/predictive_scaler_forecast_upper"
        )
        assert (status, body["items"]) == (200, [])


class TestErrors:
    async def test_unknown_metric_is_404(self, https: Client) -> None:
        for path in (
            f"{BASE}/namespaces/nim/predictive_scaler_applied_min_replicas",
            f"{BASE}/namespaces/nim/gpu_cache_usage_perc",
        ):
            status, body = await https.get(path)
            assert status == 404
            assert (body["kind"], body["reason"], body["code"]) == ("Status", "NotFound", 404)
        status, _ = await https.get("/apis/custom.metrics.k8s.io/v1beta1")
        assert status == 404

    @pytest.mark.parametrize("selector", ["hpa in (", "hpa in ()", "=x", "hpa=a b", "hpa=ü", "a,"])
    async def test_bad_selector_is_400(self, https: Client, selector: str) -> None:
        status, body = await https.get(
            f"{BASE}/namespaces/nim/predictive_scaler_forecast_upper", labelSelector=selector
        )
        assert status == 400
        assert (body["kind"], body["reason"]) == ("Status", "BadRequest")
        assert "labelSelector" in body["message"]


class TestTls:
    async def test_plain_http_is_refused(self, server: ExternalMetricsServer) -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{server.port}{BASE}") as response:
                    await response.read()

    async def test_a_wrong_host_name_fails_verification(
        self, server: ExternalMetricsServer, certificate: Certificate
    ) -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(
                    f"https://127.0.0.1:{server.port}{BASE}",
                    ssl=certificate.client_context(),
                    server_hostname="someone-else.svc",
                ):
                    pass

    async def test_a_renewed_certificate_is_served_without_restart(
        self, certificate: Certificate, tmp_path: Path, kube_api: client.ApiClient
    ) -> None:
        live = make_certificate(tmp_path / "live")
        started = ExternalMetricsServer(
            ControllerMetrics(),
            str(live.cert_file),
            str(live.key_file),
            auth=DelegatedAuth(KubeClient(kube_api), skip_lookup=True),
            host="127.0.0.1",
            port=0,
        )
        await started.start()
        try:
            assert not started.reload_certificate()  # unchanged
            renewed = make_certificate(tmp_path / "renewed")
            live.cert_file.write_bytes(renewed.cert_file.read_bytes())
            live.key_file.write_bytes(renewed.key_file.read_bytes())
            assert started.reload_certificate()
            async with aiohttp.ClientSession() as session:
                url = f"https://127.0.0.1:{started.port}/healthz"
                async with session.get(
                    url, ssl=renewed.client_context(), server_hostname=SERVICE_DNS
                ) as response:
                    assert response.status == 200
            # A broken renewal keeps the certificate in use.
            live.key_file.write_text("not a key")
            assert not started.reload_certificate()
        finally:
            await started.close()


# ---------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("value", "quantity"),
    [
        (2.35, "2350m"),
        (3.0, "3"),
        (0.0, "0"),
        (0.7000000000000001, "700m"),
        (-1.5, "-1500m"),
        (1500.0, "1500"),
        (4000.0, "4k"),
        (2e6, "2M"),
        (0.1234567, "123m"),
    ],
)
def test_format_quantity(value: float, quantity: str) -> None:
    assert format_quantity(value) == quantity


def test_format_quantity_refuses_nan() -> None:
    with pytest.raises(ValueError, match="finite"):
        format_quantity(float("nan"))


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("a=b", {"a": "b"}, True),
        ("a=b", {}, False),
        ("a!=b", {}, True),
        ("a notin (b)", {}, True),
        ("a in (b)", {}, False),
        ("a=", {"a": ""}, True),
        ("a in (,b)", {"a": ""}, True),
        ("example.com/team=ml", {"example.com/team": "ml"}, True),
        ("a>1", {"a": "x"}, False),
        ("  a = b ,  c  ", {"a": "b", "c": "1"}, True),
    ],
)
def test_selector_semantics(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(parse_label_selector(selector), labels) is matches


@pytest.mark.parametrize(
    "selector",
    ["a in (b", "a in ()", "a in (b c)", "a b", "!", "a=b=c", "a,", ",a", "a>b", "A_/b=c", "a=-b"],
)
def test_selector_errors(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


# ---------------------------------------------------------------------------- in the controller


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


NAMESPACES = ("busy", "idle", "halved", "empty")
"""The namespaces of CONFIG's targets (test_reconcile), each with its HPA here."""


def _overlay_args() -> list[str]:
    """The container args of the external-metrics overlay's Deployment."""
    deployment = find_object(render("external-metrics"), "Deployment", "predictive-scaler")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return [str(arg) for arg in container["args"]]


def _gauge_lines(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    values = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels_text, _, value = line[len(name) + 1 :].rpartition("} ")
            pairs = (item.split("=", 1) for item in labels_text.split('",') if item)
            labels = frozenset((k, v.strip('"')) for k, v in pairs)
            values[labels] = float(value)
    return values


async def test_the_controller_serves_its_forecast(
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    certificate: Certificate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run`` with the overlay's flags: the External Metrics API serves what /metrics shows."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    for namespace in NAMESPACES:
        kube_server.put_object(make_hpa(namespace, "nim", 1, 10))
    allow_reader(kube_server)
    # The overlay's own flags, with this test's port and files.
    ours = {
        "--external-metrics-port": "0",
        "--tls-cert-file": str(certificate.cert_file),
        "--tls-key-file": str(certificate.key_file),
    }
    flags = [arg.partition("=") for arg in _overlay_args() if arg.startswith(tuple(ours))]
    assert sorted(name for name, _, _ in flags) == sorted(ours)
    argv = [f"{name}={ours[name]}" for name, _, _ in flags]
    parsed = build_parser().parse_args(["run", "--config", str(config), "--dry-run", *argv])
    options = run_options(
        kube_server,
        prometheus.url,
        tmp_path,
        monkeypatch,
        config_file=parsed.config_file,
        identity=None,
        dry_run=parsed.dry_run,
        external_metrics_port=parsed.external_metrics_port,
        tls_cert_file=parsed.tls_cert_file,
        tls_key_file=parsed.tls_key_file,
    )
    clock = FakeClock(dt.datetime.fromtimestamp(DATA_END + 60, dt.UTC))
    sleeper = QuiescentSleeper(clock)
    async with running_controller(options, clock=clock, sleeper=sleeper) as running:
        controller = running.controller
        # Every target decided once, then time stops: /metrics and the API are read apart,
        # and a cycle in between must not age a forecast past its freshness.
        await eventually(lambda: len(controller.last_reports) == len(NAMESPACES))
        sleeper.frozen = True
        await eventually(lambda: not controller.dispatcher.busy())
        assert controller.external_metrics_port is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{controller.metrics_port}/metrics") as r:
                exposition = await r.text()
            https = Client(session, controller.external_metrics_port, certificate.client_context())
            for metric in METRIC_NAMES:
                on_metrics = _gauge_lines(exposition, metric)
                served: dict[frozenset[tuple[str, str]], str] = {}
                for namespace in NAMESPACES:
                    status, body = await https.get(
                        f"{BASE}/namespaces/{namespace}/{metric}", labelSelector="hpa=nim"
                    )
                    assert status == 200
                    for item in body["items"]:
                        assert item["metricLabels"]["target_namespace"] == namespace
                        served[frozenset(item["metricLabels"].items())] = item["value"]
                assert served, metric
                assert served == {k: format_quantity(v) for k, v in on_metrics.items()}
            status, body = await https.get(
                f"{BASE}/namespaces/busy/predictive_scaler_recommended_min_replicas",
                labelSelector="hpa=nim",
            )
            [item] = body["items"]
            assert item["value"] == "3"  # 2 pods at 0.9 need 3 at 0.7
            report = controller.last_reports[("busy", "nim")]
            assert item["timestamp"] == report.at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert await running.stop() == 0


async def test_run_refuses_the_port_without_a_certificate(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    options = RunOptions(config_file=str(config), external_metrics_port=6443)
    assert await run_controller(options, install_signal_handlers=False) == 2
