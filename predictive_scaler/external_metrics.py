"""The optional built-in External Metrics API (``external.metrics.k8s.io/v1beta1``) over TLS.

A thin adapter, like KEDA's metrics adapter: it computes nothing and only reads the values the
controller already published (:meth:`predictive_scaler.publish.ControllerMetrics.published`).
The Kubernetes API aggregator forwards an HPA's External metric request here when the
APIService ``v1beta1.external.metrics.k8s.io`` points at the controller's Service
(``deploy/overlays/external-metrics``). Off by default: only one APIService may own that
group/version in a cluster.

Served paths, as the real API:

- ``GET /apis/external.metrics.k8s.io/v1beta1``: discovery, an ``APIResourceList`` of the
  metric names (namespaced, verb ``get``);
- ``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector=``:
  an ``ExternalMetricValueList`` of the metric's series in that namespace whose labels match
  the selector (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``, ``!a``,
  ``a>1``, ``a<1``); 400 for a bad selector, 404 for an unknown metric;
- ``GET /apis/external.metrics.k8s.io`` (``APIGroup``) and ``/healthz``.

Every request but ``/healthz`` is authenticated and authorized through the API server, as
aggregated API servers are (:mod:`predictive_scaler.delegated_auth`): the kube-aggregator's
front-proxy client certificate with ``X-Remote-User``, or a bearer token (TokenReview); then a
SubjectAccessReview (a metric is the resource, verb ``list``, in the request's namespace;
discovery paths are non-resource URLs). Without credentials: 401; denied: 403.

Errors are ``Status`` objects. The certificate and key are PEM files (a mounted
``kubernetes.io/tls`` Secret); :func:`watch_certificate` reloads them when they change, so a
renewed certificate is served without a restart.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from predictive_scaler.delegated_auth import DelegatedAuth
from predictive_scaler.logs import get_logger
from predictive_scaler.publish import ControllerMetrics, PublishedValue

__all__ = [
    "GROUP",
    "GROUP_VERSION",
    "METRIC_NAMES",
    "ExternalMetricsServer",
    "Requirement",
    "SelectorError",
    "format_quantity",
    "make_external_metrics_app",
    "make_ssl_context",
    "parse_label_selector",
    "selector_matches",
    "watch_certificate",
]

GROUP: Final = "external.metrics.k8s.io"
VERSION: Final = "v1beta1"
GROUP_VERSION: Final = f"{GROUP}/{VERSION}"
METRIC_NAMES: Final = (
    "predictive_scaler_forecast_upper",
    "predictive_scaler_forecast_mean",
    "predictive_scaler_recommended_min_replicas",
)
"""The metrics served, by their names on ``/metrics``."""
CERTIFICATE_CHECK_SECONDS: Final = 60.0

log = get_logger()

# ---------------------------------------------------------------------------- label selectors

_NAME_RE: Final = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_PREFIX_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_OPERATORS: Final = ("=", "==", "!=", "in", "notin", "exists", "!", ">", "<")
_SPECIAL: Final = frozenset("!=(),<> \t\n")


class SelectorError(ValueError):
    """A label selector that does not parse; the message says where and why."""


@dataclass(frozen=True)
class Requirement:
    """One requirement of a label selector (``k8s.io/apimachinery/pkg/labels``)."""

    key: str
    operator: str
    """``=`` (also for ``==``), ``!=``, ``in``, ``notin``, ``exists``, ``!`` (does not
    exist), ``>`` or ``<``."""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case "exists":
                return present
            case "!":
                return not present
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case _:  # ">" or "<": integers on both sides
                if value is None:
                    return False
                try:
                    have = int(value)
                except ValueError:
                    return False
                limit = int(next(iter(self.values)))
                return have > limit if self.operator == ">" else have < limit


def _check_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix)):
        raise SelectorError(f"invalid label key {key!r}: the prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _NAME_RE.fullmatch(name):
        raise SelectorError(
            f"invalid label key {key!r}: a name is 1-63 characters of [A-Za-z0-9_.-], "
            "beginning and ending with a letter or digit"
        )


def _check_value(value: str) -> None:
    if len(value) > 63 or not _NAME_RE.fullmatch(value):
        raise SelectorError(
            f"invalid label value {value!r}: at most 63 characters of [A-Za-z0-9_.-], "
            "beginning and ending with a letter or digit"
        )


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "(),<>":
            tokens.append(char)
            i += 1
        elif char in "!=":
            double = text[i : i + 2]
            if double in {"!=", "=="}:
                tokens.append(double)
                i += 2
            else:
                tokens.append(char)
                i += 1
        else:
            start = i
            while i < len(text) and text[i] not in _SPECIAL:
                i += 1
            tokens.append(text[start:i])
    return tokens


def _value_list(take: Callable[[], str], key: str, operator: str, text: str) -> frozenset[str]:
    """The ``(x, y)`` of ``in``/``notin``, the ``(`` already taken; an empty item is ``""``."""
    items: list[str] = []
    current: str | None = None
    while True:
        token = take()
        if token in {",", ")"}:
            if token == ")" and current is None and not items:
                raise SelectorError(f"{key} {operator} (): the set of values must not be empty")
            items.append(current or "")
            current = None
            if token == ")":
                break
        elif token in {"(", "!", "=", "==", "!=", "<", ">"} or current is not None:
            raise SelectorError(f"expected ',' or ')' in {text!r}, found {token!r}")
        else:
            current = token
    for item in items:
        _check_value(item)
    return frozenset(items)


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse a label selector as ``kubectl -l`` and the API server do; ``""`` selects all.

    Raises :class:`SelectorError` with the reason for anything else.
    """
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        token = peek()
        if token is None:
            raise SelectorError(f"unexpected end of the selector {text!r}")
        position += 1
        return token

    def word(what: str) -> str:
        token = take()
        if token in {"(", ")", ",", "!", "=", "==", "!=", "<", ">"}:
            raise SelectorError(f"expected {what}, found {token!r} in {text!r}")
        return token

    while peek() is not None:
        if peek() == "!":
            take()
            key = word("a label key after '!'")
            _check_key(key)
            requirements.append(Requirement(key, "!"))
        else:
            key = word("a label key")
            _check_key(key)
            operator = peek()
            if operator is None or operator == ",":
                requirements.append(Requirement(key, "exists"))
            elif operator in {"=", "==", "!="}:
                take()
                following = peek()
                value = "" if following in {None, ","} else word("a label value")
                _check_value(value)
                requirements.append(
                    Requirement(key, "!=" if operator == "!=" else "=", frozenset({value}))
                )
            elif operator in {"in", "notin"}:
                take()
                if take() != "(":
                    raise SelectorError(f"expected '(' after {operator!r} in {text!r}")
                values = _value_list(take, key, operator, text)
                requirements.append(Requirement(key, operator, values))
            elif operator in {">", "<"}:
                take()
                value = word("an integer")
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise SelectorError(f"{key}{operator}{value}: the value must be an integer")
                requirements.append(Requirement(key, operator, frozenset({value})))
            else:
                raise SelectorError(f"unexpected {operator!r} after the key {key!r} in {text!r}")
        following = peek()
        if following is None:
            break
        if take() != ",":
            raise SelectorError(f"expected ',' between requirements in {text!r}")
        if peek() is None:
            raise SelectorError(f"a selector must not end with ',': {text!r}")
    return requirements


def selector_matches(requirements: Sequence[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether every requirement holds for ``labels`` (no requirement: everything matches)."""
    return all(requirement.matches(labels) for requirement in requirements)


# ---------------------------------------------------------------------------- values

_SUFFIXES: Final = ("", "k", "M", "G", "T", "P", "E")


def format_quantity(value: float) -> str:
    """A Kubernetes quantity in canonical decimal form, to the milli-unit: ``2.35`` ->
    ``"2350m"``, ``3.0`` -> ``"3"``, ``4000.0`` -> ``"4k"`` (as ``resource.Quantity``)."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite quantity: {value}")
    milli = round(value * 1000)
    if milli % 1000:
        return f"{milli}m"
    units = milli // 1000
    exponent = 0
    while units and units % 1000 == 0 and exponent < len(_SUFFIXES) - 1:
        units //= 1000
        exponent += 1
    return f"{units}{_SUFFIXES[exponent]}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item(value: PublishedValue) -> dict[str, Any]:
    return {
        "metricName": value.metric,
        "metricLabels": dict(value.labels),
        "timestamp": _rfc3339(value.at),
        "value": format_quantity(value.value),
    }


# ---------------------------------------------------------------------------- HTTP


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def make_external_metrics_app(metrics: ControllerMetrics, auth: DelegatedAuth) -> web.Application:
    """The External Metrics API over the controller's published values, every request through
    ``auth`` (no TLS here: see :class:`ExternalMetricsServer`)."""

    async def group(_request: web.Request) -> web.Response:
        preferred = {"groupVersion": GROUP_VERSION, "version": VERSION}
        return web.json_response(
            {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": GROUP,
                "versions": [preferred],
                "preferredVersion": preferred,
            }
        )

    async def discovery(_request: web.Request) -> web.Response:
        resources = [
            {
                "name": name,
                "singularName": "",
                "namespaced": True,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            }
            for name in METRIC_NAMES
        ]
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": GROUP_VERSION,
                "resources": resources,
            }
        )

    async def values(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        metric = request.match_info["metric"]
        if metric not in METRIC_NAMES:
            return _status(
                404, "NotFound", f'the server could not find the metric "{metric}" ({GROUP})'
            )
        try:
            requirements = parse_label_selector(request.query.get("labelSelector", ""))
        except SelectorError as error:
            return _status(400, "BadRequest", f"unable to parse labelSelector: {error}")
        items = [
            _item(value)
            for value in metrics.published(metric)
            if value.labels.get("target_namespace") == namespace
            and math.isfinite(value.value)
            and selector_matches(requirements, value.labels)
        ]
        return web.json_response(
            {
                "kind": "ExternalMetricValueList",
                "apiVersion": GROUP_VERSION,
                "metadata": {},
                "items": items,
            }
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def not_found(_request: web.Request) -> web.Response:
        return _status(404, "NotFound", "the server could not find the requested resource")

    app = web.Application(middlewares=[auth.middleware])
    base = f"/apis/{GROUP}"
    app.router.add_get(base, group)
    app.router.add_get(f"{base}/{VERSION}", discovery)
    app.router.add_get(f"{base}/{VERSION}/namespaces/{{namespace}}/{{metric}}", values)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


def make_ssl_context(
    cert_file: str, key_file: str, client_ca_pem: str | None = None
) -> ssl.SSLContext:
    """A server context (TLS 1.2+) with the PEM certificate chain and key loaded. With
    ``client_ca_pem`` it asks for a client certificate and verifies one that is sent against
    that CA (``CERT_OPTIONAL``: a caller with a bearer token and no certificate still
    connects; one with a certificate from another CA does not)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_pem is not None:
        context.load_verify_locations(cadata=client_ca_pem)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _mtimes(*paths: str) -> tuple[int | None, ...]:
    stamps: list[int | None] = []
    for path in paths:
        try:
            stamps.append(os.stat(path).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class ExternalMetricsServer:
    """The External Metrics API over HTTPS, callers authenticated and authorized by ``auth``;
    ``start`` then ``close`` (twice is safe)."""

    def __init__(
        self,
        metrics: ControllerMetrics,
        cert_file: str,
        key_file: str,
        *,
        auth: DelegatedAuth,
        host: str = "0.0.0.0",
        port: int = 6443,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.host = host
        self.requested_port = port
        self.auth = auth
        self.app = make_external_metrics_app(metrics, auth)
        self.ssl_context: ssl.SSLContext | None = None
        self._stamps: tuple[int | None, ...] = ()
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Settle the front-proxy CA, load the certificate and listen; returns the bound port.
        Raises ``OSError`` (``ssl.SSLError`` included) for an unreadable certificate, client
        CA or a busy port."""
        if self._runner is not None:
            return self.port
        await self.auth.prepare()
        self._stamps = _mtimes(self.cert_file, self.key_file)
        self.ssl_context = make_ssl_context(self.cert_file, self.key_file, self.auth.client_ca_pem)
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.requested_port, ssl_context=self.ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return self.port

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("the External Metrics API server is not started")
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        raise RuntimeError("the server listens on no TCP port")

    def reload_certificate(self) -> bool:
        """Load the certificate again when its files changed (new connections use it);
        returns whether it did. A broken renewal keeps the certificate in use."""
        stamps = _mtimes(self.cert_file, self.key_file)
        if self.ssl_context is None or stamps == self._stamps:
            return False
        try:
            self.ssl_context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ValueError) as error:
            log.warning("certificate_reload_failed", error=str(error), cert=self.cert_file)
            return False
        self._stamps = stamps
        log.info("certificate_reloaded", cert=self.cert_file)
        return True

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


async def watch_certificate(
    server: ExternalMetricsServer,
    sleeper: Callable[[float], Awaitable[None]] = asyncio.sleep,
    interval_seconds: float = CERTIFICATE_CHECK_SECONDS,
) -> None:
    """Reload the server's certificate whenever its files change (cert-manager renewals),
    until cancelled."""
    while True:
        await sleeper(interval_seconds)
        server.reload_certificate()
