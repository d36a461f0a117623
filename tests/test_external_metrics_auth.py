"""Delegated authentication and authorization of the External Metrics API: the real server
over TLS, the API double's TokenReview and SubjectAccessReview through the real
kubernetes-asyncio client, and certificates made for the test (a front-proxy CA as the
kube-aggregator's, and another CA nobody trusts)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from predictive_scaler.cli import build_parser, run_options
from predictive_scaler.delegated_auth import AuthCacheSettings, DelegatedAuth
from predictive_scaler.external_metrics import ExternalMetricsServer
from predictive_scaler.kube import KubeClient
from predictive_scaler.request_auth import (
    RequestAttributes,
    RequestHeaderConfig,
    TtlCache,
    UserInfo,
    compute_request_attributes,
    compute_subject_access_review,
    compute_user_from_headers,
    parse_authentication_configmap,
)
from tests.external_metrics_auth_support import (
    AGGREGATOR_CN,
    DISCOVERY,
    HPA_GROUPS,
    HPA_TOKEN,
    HPA_USER,
    READ_METRICS,
    CertificateAuthority,
    authentication_configmap,
    make_ca,
)
from tests.kube_double import KubeDouble
from tests.test_external_metrics import (
    BASE,
    SERVICE_DNS,
    Certificate,
    make_certificate,
    published_metrics,
)

UPPER = f"{BASE}/namespaces/nim/predictive_scaler_forecast_upper"
TIMEOUT = 10.0


@dataclass(frozen=True)
class Pki:
    serving: Certificate
    front_proxy: CertificateAuthority
    aggregator: tuple[Path, Path]
    """The aggregator's proxy client certificate, CN front-proxy-client."""
    someone_else: tuple[Path, Path]
    """Signed by the front-proxy CA, CN not in the allowed names."""
    untrusted: tuple[Path, Path]
    """CN front-proxy-client, signed by another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    front_proxy = make_ca(root / "front-proxy-ca", "front-proxy-ca")
    other = make_ca(root / "other-ca", "other-ca")
    return Pki(
        serving=make_certificate(root / "serving"),
        front_proxy=front_proxy,
        aggregator=front_proxy.issue_client(root / "aggregator", AGGREGATOR_CN),
        someone_else=front_proxy.issue_client(root / "someone", "someone-else"),
        untrusted=other.issue_client(root / "untrusted", AGGREGATOR_CN),
    )


class Clock:
    """Monotonic seconds that stand still until advanced."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    double: KubeDouble
    server: ExternalMetricsServer
    clock: Clock
    pki: Pki

    def reviews(self, kind: str) -> list[dict[str, Any]]:
        """Bodies of the TokenReviews / SubjectAccessReviews the double answered."""
        return [
            json.loads(record.body or b"{}")
            for record in self.double.requests
            if record.path.endswith(f"/{kind}") and record.status == 201
        ]

    async def get(
        self,
        path: str,
        *,
        token: str | None = None,
        cert: tuple[Path, Path] | None = None,
        headers: Mapping[str, str] | None = None,
        **params: str,
    ) -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(self.pki.serving.cert_file))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as session:
            request = session.get(
                f"https://127.0.0.1:{self.server.port}{path}",
                params=params,
                headers=sent,
                ssl=context,
                server_hostname=SERVICE_DNS,
            )
            async with asyncio.timeout(TIMEOUT), request as response:
                if response.content_type == "application/json":
                    return response.status, await response.json()
                return response.status, await response.text()


async def _started(double: KubeDouble, pki: Pki, auth: DelegatedAuth) -> ExternalMetricsServer:
    server = ExternalMetricsServer(
        published_metrics(),
        str(pki.serving.cert_file),
        str(pki.serving.key_file),
        auth=auth,
        host="127.0.0.1",
        port=0,
    )
    await asyncio.wait_for(server.start(), TIMEOUT)
    return server


@pytest.fixture
async def setup(
    kube_server: KubeDouble, kube_api: client.ApiClient, pki: Pki
) -> AsyncIterator[Setup]:
    """The cluster publishes the front-proxy CA with allowed name front-proxy-client; the HPA
    controller's token is known; discovery is open to every authenticated user, as the
    built-in ``system:discovery`` binding makes it."""
    kube_server.put_object(authentication_configmap(pki.front_proxy, [AGGREGATOR_CN]))
    kube_server.add_token(HPA_TOKEN, HPA_USER, HPA_GROUPS)
    kube_server.add_token("nobody-token", "system:serviceaccount:default:nobody")
    kube_server.bind([DISCOVERY], group="system:authenticated")
    clock = Clock()
    auth = DelegatedAuth(KubeClient(kube_api), clock=clock)
    server = await _started(kube_server, pki, auth)
    try:
        yield Setup(kube_server, server, clock, pki)
    finally:
        await server.close()


# ---------------------------------------------------------------------------- authentication


class TestAuthentication:
    async def test_no_credentials_is_401(self, setup: Setup) -> None:
        status, body = await setup.get(UPPER)
        assert (status, body["kind"], body["reason"], body["code"]) == (
            401,
            "Status",
            "Unauthorized",
            401,
        )
        assert setup.reviews("subjectaccessreviews") == []

    async def test_an_unknown_token_is_401(self, setup: Setup) -> None:
        status, body = await setup.get(UPPER, token="forged")
        assert (status, body["reason"]) == (401, "Unauthorized")
        [review] = setup.reviews("tokenreviews")
        assert review["spec"] == {"token": "forged"}

    async def test_health_needs_no_credentials(self, setup: Setup) -> None:
        assert await setup.get("/healthz") == (200, "ok\n")
        assert not any("review" in record.path for record in setup.double.requests)

    async def test_a_failed_token_review_authenticates_no_one(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], user=HPA_USER)
        setup.double.fail_next("POST", "tokenreviews", 503)
        status, body = await setup.get(UPPER, token=HPA_TOKEN)
        assert (status, body["reason"]) == (401, "Unauthorized")
        # Not cached: the next request asks again and gets in.
        status, _ = await setup.get(UPPER, token=HPA_TOKEN)
        assert status == 200


# ---------------------------------------------------------------------------- authorization


class TestAuthorization:
    async def test_a_valid_token_without_rbac_is_403(self, setup: Setup) -> None:
        status, body = await setup.get(UPPER, token=HPA_TOKEN)
        assert (status, body["kind"], body["reason"]) == (403, "Status", "Forbidden")
        assert body["message"] == (
            "predictive_scaler_forecast_upper.external.metrics.k8s.io is forbidden: User "
            f'"{HPA_USER}" cannot list resource "predictive_scaler_forecast_upper" in API group '
            '"external.metrics.k8s.io" in the namespace "nim"'
        )
        [review] = setup.reviews("subjectaccessreviews")
        assert review["spec"] == {
            "user": HPA_USER,
            "groups": [*HPA_GROUPS, "system:authenticated"],
            "resourceAttributes": {
                "verb": "list",
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "resource": "predictive_scaler_forecast_upper",
                "namespace": "nim",
            },
        }

    async def test_with_rbac_the_values_are_served(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], user=HPA_USER)
        status, body = await setup.get(UPPER, token=HPA_TOKEN, labelSelector="hpa=mistral")
        assert status == 200
        assert [(i["metricLabels"]["hpa"], i["value"]) for i in body["items"]] == [
            ("mistral", "700m")
        ]

    async def test_a_group_binding_is_honoured(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], group="system:serviceaccounts:kube-system")
        status, _ = await setup.get(UPPER, token=HPA_TOKEN)
        assert status == 200

    async def test_a_namespaced_grant_covers_its_namespace_only(self, setup: Setup) -> None:
        setup.double.bind([{**READ_METRICS, "namespace": "nim"}], user=HPA_USER)
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 200
        other = f"{BASE}/namespaces/llm/predictive_scaler_forecast_upper"
        assert (await setup.get(other, token=HPA_TOKEN))[0] == 403

    async def test_each_metric_is_its_own_resource(self, setup: Setup) -> None:
        rule = {**READ_METRICS, "resources": ["predictive_scaler_forecast_upper"]}
        setup.double.bind([rule], user=HPA_USER)
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 200
        mean = f"{BASE}/namespaces/nim/predictive_scaler_forecast_mean"
        assert (await setup.get(mean, token=HPA_TOKEN))[0] == 403

    async def test_discovery_is_a_non_resource_request(self, setup: Setup) -> None:
        for path in ("/apis", "/apis/external.metrics.k8s.io", BASE):
            status, _ = await setup.get(path, token="nobody-token")
            assert status in {200, 404}, path  # /apis itself is not served here
        specs = [review["spec"] for review in setup.reviews("subjectaccessreviews")]
        assert [spec["nonResourceAttributes"] for spec in specs] == [
            {"path": "/apis", "verb": "get"},
            {"path": "/apis/external.metrics.k8s.io", "verb": "get"},
            {"path": BASE, "verb": "get"},
        ]
        assert all("resourceAttributes" not in spec for spec in specs)

    async def test_discovery_without_the_discovery_role_is_403(
        self, kube_server: KubeDouble, kube_api: client.ApiClient, pki: Pki
    ) -> None:
        kube_server.add_token("nobody-token", "system:serviceaccount:default:nobody")
        server = await _started(kube_server, pki, DelegatedAuth(KubeClient(kube_api)))
        try:
            status, body = await Setup(kube_server, server, Clock(), pki).get(
                BASE, token="nobody-token"
            )
        finally:
            await server.close()
        assert (status, body["reason"]) == (403, "Forbidden")
        assert body["message"] == (
            f'forbidden: User "system:serviceaccount:default:nobody" cannot get path "{BASE}"'
        )

    async def test_a_failed_review_is_500_and_not_cached(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], user=HPA_USER)
        setup.double.fail_next("POST", "subjectaccessreviews", 503)
        status, body = await setup.get(UPPER, token=HPA_TOKEN)
        assert (status, body["reason"]) == (500, "InternalError")
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 200


# ---------------------------------------------------------------------------- front proxy


class TestFrontProxy:
    async def test_the_aggregator_names_the_user_in_headers(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], user=HPA_USER)
        headers = {"X-Remote-User": HPA_USER, "X-Remote-Group": "system:serviceaccounts"}
        status, body = await setup.get(UPPER, cert=setup.pki.aggregator, headers=headers)
        assert status == 200 and body["items"]
        assert setup.reviews("tokenreviews") == []  # the certificate was enough
        [review] = setup.reviews("subjectaccessreviews")
        assert (review["spec"]["user"], review["spec"]["groups"]) == (
            HPA_USER,
            ["system:serviceaccounts", "system:authenticated"],
        )

    async def test_the_named_user_is_authorized_not_the_proxy(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], user=HPA_USER)
        headers = {"X-Remote-User": "system:serviceaccount:default:nobody"}
        status, body = await setup.get(UPPER, cert=setup.pki.aggregator, headers=headers)
        assert (status, body["reason"]) == (403, "Forbidden")
        assert '"system:serviceaccount:default:nobody"' in body["message"]

    async def test_extra_headers_reach_the_review(self, setup: Setup) -> None:
        headers = {
            "X-Remote-User": HPA_USER,
            "X-Remote-Extra-Scopes": "a",
            "X-Remote-Extra-Acme.com%2Fteam": "ml",
        }
        await setup.get(UPPER, cert=setup.pki.aggregator, headers=headers)
        [review] = setup.reviews("subjectaccessreviews")
        assert review["spec"]["extra"] == {"acme.com/team": ["ml"], "scopes": ["a"]}

    async def test_a_certificate_of_another_ca_is_not_trusted(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], user=HPA_USER)
        with pytest.raises(aiohttp.ClientError):
            await setup.get(UPPER, cert=setup.pki.untrusted, headers={"X-Remote-User": HPA_USER})
        assert setup.reviews("subjectaccessreviews") == []

    async def test_a_name_outside_the_allowed_names_is_ignored(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], user=HPA_USER)
        headers = {"X-Remote-User": HPA_USER}
        status, body = await setup.get(UPPER, cert=setup.pki.someone_else, headers=headers)
        assert (status, body["reason"]) == (401, "Unauthorized")
        # Headers ignored, a token still counts: the token's user, not the header's.
        headers = {"X-Remote-User": "system:admin"}
        status, _ = await setup.get(
            UPPER, cert=setup.pki.someone_else, headers=headers, token=HPA_TOKEN
        )
        assert status == 200
        [review] = setup.reviews("subjectaccessreviews")
        assert review["spec"]["user"] == HPA_USER

    async def test_headers_without_a_certificate_are_ignored(self, setup: Setup) -> None:
        status, _ = await setup.get(UPPER, headers={"X-Remote-User": HPA_USER})
        assert status == 401

    async def test_the_ca_flag_needs_no_configmap(
        self, kube_server: KubeDouble, kube_api: client.ApiClient, pki: Pki
    ) -> None:
        kube_server.bind([READ_METRICS], user=HPA_USER)
        auth = DelegatedAuth(
            KubeClient(kube_api),
            client_ca_file=str(pki.front_proxy.cert_file),
            allowed_names=[AGGREGATOR_CN],
        )
        server = await _started(kube_server, pki, auth)
        try:
            caller = Setup(kube_server, server, Clock(), pki)
            headers = {"X-Remote-User": HPA_USER}
            assert (await caller.get(UPPER, cert=pki.aggregator, headers=headers))[0] == 200
            assert (await caller.get(UPPER, cert=pki.someone_else, headers=headers))[0] == 401
        finally:
            await server.close()
        assert not any("configmaps" in record.path for record in kube_server.requests)

    async def test_without_the_configmap_only_tokens_work(
        self, kube_server: KubeDouble, kube_api: client.ApiClient, pki: Pki
    ) -> None:
        kube_server.bind([READ_METRICS], user=HPA_USER)
        kube_server.add_token(HPA_TOKEN, HPA_USER)
        server = await _started(kube_server, pki, DelegatedAuth(KubeClient(kube_api)))
        try:
            caller = Setup(kube_server, server, Clock(), pki)
            headers = {"X-Remote-User": HPA_USER}
            assert (await caller.get(UPPER, token=HPA_TOKEN))[0] == 200
            # No CA to check a certificate against: none is asked for, the headers count for
            # nothing.
            assert (await caller.get(UPPER, cert=pki.aggregator, headers=headers))[0] == 401
        finally:
            await server.close()


# ---------------------------------------------------------------------------- caching


class TestCache:
    async def test_two_requests_within_ten_seconds_cost_one_review_each(self, setup: Setup) -> None:
        setup.double.bind([READ_METRICS], user=HPA_USER)
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 200
        setup.clock.now += 9.9
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 200
        assert (len(setup.reviews("tokenreviews")), len(setup.reviews("subjectaccessreviews"))) == (
            1,
            1,
        )
        setup.clock.now += 0.2  # 10.1 s after the first: both answers have expired
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 200
        assert (len(setup.reviews("tokenreviews")), len(setup.reviews("subjectaccessreviews"))) == (
            2,
            2,
        )

    async def test_a_denial_is_cached_too(self, setup: Setup) -> None:
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 403
        setup.double.bind([READ_METRICS], user=HPA_USER)
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 403  # within the denied TTL
        setup.clock.now += 10.0
        assert (await setup.get(UPPER, token=HPA_TOKEN))[0] == 200

    async def test_the_cache_is_bounded(
        self, kube_server: KubeDouble, kube_api: client.ApiClient, pki: Pki
    ) -> None:
        for index in range(5):
            kube_server.add_token(f"token-{index}", f"user-{index}")
        auth = DelegatedAuth(KubeClient(kube_api), cache=AuthCacheSettings(max_entries=3))
        server = await _started(kube_server, pki, auth)
        try:
            caller = Setup(kube_server, server, Clock(), pki)
            for index in range(5):
                await caller.get(UPPER, token=f"token-{index}")
            await caller.get(UPPER, token="token-0")  # evicted: asked again
        finally:
            await server.close()
        assert len(caller.reviews("tokenreviews")) == 6


# ---------------------------------------------------------------------------- pure parts

_CONFIG = RequestHeaderConfig("PEM", ("front-proxy-client",))


@pytest.mark.parametrize(
    ("common_name", "headers", "expected"),
    [
        (None, [("X-Remote-User", "alice")], None),
        ("front-proxy-client", [], None),
        ("other", [("X-Remote-User", "alice")], None),
        ("front-proxy-client", [("X-Remote-User", "")], None),
        (
            "front-proxy-client",
            [("x-remote-user", "alice"), ("X-Remote-Group", "a"), ("X-Remote-Group", "b")],
            UserInfo("alice", "", ("a", "b"), {}),
        ),
        (
            "front-proxy-client",
            [("X-Remote-User", "alice"), ("X-Remote-User", "mallory")],
            UserInfo("alice", "", (), {}),
        ),
        (
            "front-proxy-client",
            [("X-Remote-User", "alice"), ("X-Remote-Extra-Reason", "x")],
            UserInfo("alice", "", (), {"reason": ("x",)}),
        ),
    ],
)
def test_user_from_headers(
    common_name: str | None, headers: list[tuple[str, str]], expected: UserInfo | None
) -> None:
    assert compute_user_from_headers(_CONFIG, common_name, headers) == expected


def test_empty_allowed_names_trust_any_name_the_ca_signed() -> None:
    config = RequestHeaderConfig("PEM")
    assert compute_user_from_headers(config, "anyone", [("X-Remote-User", "bob")]) == UserInfo(
        "bob"
    )


def test_configmap_parsing() -> None:
    assert parse_authentication_configmap({"client-ca-file": "PEM"}) is None
    config = parse_authentication_configmap(
        {
            "requestheader-client-ca-file": "PEM",
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User","X-User"]',
            "requestheader-group-headers": "",
        }
    )
    assert config == RequestHeaderConfig(
        "PEM", ("front-proxy-client",), ("X-Remote-User", "X-User"), ("X-Remote-Group",)
    )
    with pytest.raises(ValueError, match="requestheader-allowed-names"):
        parse_authentication_configmap(
            {"requestheader-client-ca-file": "PEM", "requestheader-allowed-names": "a,b"}
        )


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/apis", {}, RequestAttributes("get", "/apis", False)),
        ("GET", "/apis/g", {}, RequestAttributes("get", "/apis/g", False)),
        ("GET", "/apis/g/v1", {}, RequestAttributes("get", "/apis/g/v1", False)),
        ("GET", "/healthz", {}, RequestAttributes("get", "/healthz", False)),
        ("GET", "/api/v1", {}, RequestAttributes("get", "/api/v1", False)),
        (
            "GET",
            "/apis/g/v1/namespaces/nim/m",
            {},
            RequestAttributes("list", "/apis/g/v1/namespaces/nim/m", True, "g", "v1", "nim", "m"),
        ),
        (
            "GET",
            "/apis/g/v1/namespaces/nim/m",
            {"watch": "true"},
            RequestAttributes("watch", "/apis/g/v1/namespaces/nim/m", True, "g", "v1", "nim", "m"),
        ),
        (
            "GET",
            "/apis/g/v1/namespaces/nim/m/x/status",
            {},
            RequestAttributes(
                "get",
                "/apis/g/v1/namespaces/nim/m/x/status",
                True,
                "g",
                "v1",
                "nim",
                "m",
                "status",
                "x",
            ),
        ),
        (
            "GET",
            "/apis/g/v1/m",
            {},
            RequestAttributes("list", "/apis/g/v1/m", True, "g", "v1", "", "m"),
        ),
        (
            "GET",
            "/api/v1/namespaces/nim",
            {},
            RequestAttributes(
                "get", "/api/v1/namespaces/nim", True, "", "v1", "nim", "namespaces", "", "nim"
            ),
        ),
        (
            "DELETE",
            "/apis/g/v1/namespaces/nim/m",
            {},
            RequestAttributes(
                "deletecollection", "/apis/g/v1/namespaces/nim/m", True, "g", "v1", "nim", "m"
            ),
        ),
        (
            "POST",
            "/apis/g/v1/namespaces/nim/m",
            {},
            RequestAttributes("create", "/apis/g/v1/namespaces/nim/m", True, "g", "v1", "nim", "m"),
        ),
    ],
)
def test_request_attributes(
    method: str, path: str, query: dict[str, str], expected: RequestAttributes
) -> None:
    assert compute_request_attributes(method, path, query) == expected


def test_subject_access_review_spec() -> None:
    user = UserInfo("alice", "u-1", ("g",), {"scopes": ("a", "b")})
    attributes = compute_request_attributes("GET", "/apis/g/v1/namespaces/nim/m/x")
    assert compute_subject_access_review(user, attributes) == {
        "user": "alice",
        "uid": "u-1",
        "groups": ["g"],
        "extra": {"scopes": ["a", "b"]},
        "resourceAttributes": {
            "verb": "get",
            "group": "g",
            "version": "v1",
            "resource": "m",
            "namespace": "nim",
            "name": "x",
        },
    }


def test_ttl_cache() -> None:
    cache: TtlCache[str, int] = TtlCache(2)
    cache.put("a", 1, now=0.0, ttl_seconds=10.0)
    assert cache.get("a", 9.99) == 1
    assert cache.get("a", 10.0) is None  # expired, and dropped
    assert len(cache) == 0
    cache.put("a", 1, now=0.0, ttl_seconds=10.0)
    cache.put("b", 2, now=0.0, ttl_seconds=10.0)
    assert cache.get("a", 1.0) == 1  # a is now the most recently used
    cache.put("c", 3, now=1.0, ttl_seconds=10.0)
    assert (cache.get("a", 2.0), cache.get("b", 2.0), cache.get("c", 2.0)) == (1, None, 3)
    cache.put("d", 4, now=0.0, ttl_seconds=0.0)  # a zero TTL caches nothing
    assert cache.get("d", 0.0) is None
    with pytest.raises(ValueError, match="max_entries"):
        TtlCache(0)


# ---------------------------------------------------------------------------- the command line


def test_run_flags_reach_the_options() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--config",
            "c.yaml",
            "--requestheader-client-ca-file",
            "/etc/front-proxy/ca.crt",
            "--requestheader-allowed-names",
            "front-proxy-client, aggregator",
            "--authentication-skip-lookup",
        ]
    )
    options = run_options(args)
    assert options.requestheader_client_ca_file == "/etc/front-proxy/ca.crt"
    assert options.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    assert options.authentication_skip_lookup is True
    defaults = run_options(build_parser().parse_args(["run", "--config", "c.yaml"]))
    assert (
        defaults.requestheader_client_ca_file,
        defaults.requestheader_allowed_names,
        defaults.authentication_skip_lookup,
    ) == (None, (), False)


async def test_an_unreadable_ca_file_fails_the_start(
    kube_server: KubeDouble, kube_api: client.ApiClient, pki: Pki, tmp_path: Path
) -> None:
    auth = DelegatedAuth(KubeClient(kube_api), client_ca_file=str(tmp_path / "missing.crt"))
    with pytest.raises(OSError, match=r"missing\.crt"):
        await _started(kube_server, pki, auth)
