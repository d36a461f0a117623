"""The field tables of every section but the policy: signals, targets, Prometheus, the
controller and the top level, with the text rules (patterns, limits) their parsers share.

The JSON Schema (``json_schema``) reads the same patterns and limits, so the editor's check and
``validate-config`` agree.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

from predictive_scaler.config.errors import _Ctx, _Invalid
from predictive_scaler.config.presets import (
    _DEFAULT_SIGNAL_NAME,
    MATCHERS_PLACEHOLDER,
    SIGNAL_PRESETS,
)
from predictive_scaler.config.schema import (
    _boolean_field,
    _choice_field,
    _duration_field,
    _Field,
    _integer_field,
    _join,
    _nullable,
    _ordered,
    _pattern_parser,
    _section,
)
from predictive_scaler.signals import DEFAULT_KIND, SIGNAL_KINDS

# ---- text rules shared by the parsers (and the JSON Schema) ------------------------------------

_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN_RE: Final = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)
_DNS_LABEL_RULE: Final = (
    "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', "
    "starting and ending with a letter or digit"
)
_DNS_SUBDOMAIN_RULE: Final = (
    "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit"
)
_LABEL_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:.\-/]*")
_SIGNAL_NAME_RE: Final = re.compile(r"[a-z0-9_]+")
_TARGET_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]*")
_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+")
_PLACEHOLDER_RE: Final = re.compile(r"\$(?:\$|\{([^}]*)\}?|([A-Za-z_][A-Za-z0-9_]*)|)")
_FORBIDDEN_HEADERS: Final = ("authorization", "proxy-authorization", "cookie")
_MAX_QUERY_LEN: Final = 10000
_MAX_TEXT_LEN: Final = 1024
_MAX_PATH_LEN: Final = 4096


def _is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and _DNS_SUBDOMAIN_RE.fullmatch(value) is not None


def _parse_dns_subdomain(value: object, ctx: _Ctx, path: str) -> str:
    if not isinstance(value, str) or not value or not _is_dns_subdomain(value):
        raise _Invalid(_DNS_SUBDOMAIN_RULE)
    return value


_QUERY_RULE: Final = (
    f"must be a non-empty PromQL string (at most {_MAX_QUERY_LEN} characters) whose only "
    "placeholder is ${matchers} (write $$ for a literal $)"
)


def _parse_query(value: object, ctx: _Ctx, path: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_QUERY_LEN:
        raise _Invalid(_QUERY_RULE)
    for match in _PLACEHOLDER_RE.finditer(value):
        if match.group(0) not in ("$$", MATCHERS_PLACEHOLDER):
            raise _Invalid(_QUERY_RULE)
    return value


# ---- signals -----------------------------------------------------------------------------------


def _parse_target_per_pod(value: object, ctx: _Ctx, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1e6:
        raise _Invalid(_TARGET_PER_POD_RULE)
    return float(value)


_TARGET_PER_POD_RULE: Final = "must be a number greater than 0 and at most 1000000, or null"

_SIGNAL_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _Field(
        "name",
        "string",
        None,
        "must be 1-63 characters from a-z, 0-9 and _, unique within the target",
        "Signal id (metrics, logs). Required unless `preset` is set.",
        _pattern_parser(
            _SIGNAL_NAME_RE,
            63,
            "must be 1-63 characters from a-z, 0-9 and _, unique within the target",
        ),
        "name",
        default_doc=f"`{_DEFAULT_SIGNAL_NAME}` with a preset",
    ),
    _Field(
        "kind",
        "string",
        DEFAULT_KIND,
        "must be one of: " + ", ".join(SIGNAL_KINDS),
        "Which queries the signal reads and how they become demand (see Signal kinds).",
        _choice_field("kind", "kind", DEFAULT_KIND, tuple(SIGNAL_KINDS), "").parse,
        "kind",
        choices=tuple(SIGNAL_KINDS),
    ),
    _Field(
        "preset",
        "string",
        None,
        "must be one of: " + ", ".join(SIGNAL_PRESETS),
        "Fills the keys its kind reads of `query`, `queueQuery`, `runningQuery` and `hpaMetric` "
        "(see Presets, Signal kinds); keys given explicitly win.",
        _choice_field("preset", "preset", "", tuple(SIGNAL_PRESETS), "").parse,
        "preset",
        default_doc="`null`",
        choices=tuple(SIGNAL_PRESETS),
    ),
    _Field(
        "query",
        "string",
        None,
        _QUERY_RULE,
        "PromQL for the demand summed over the target's pods (in units of the per-pod target). "
        "Required unless `preset` is set.",
        _parse_query,
        "query",
        default_doc="from preset",
    ),
    _Field(
        "queueQuery",
        "string",
        None,
        _QUERY_RULE + ", or null",
        "PromQL for requests waiting; corrects saturated demand upward by "
        "`waiting / max(running, 1)` at steps where both series have a sample (elsewhere the "
        "usage stands and the signal is partial: it may raise, never lower). `null` disables "
        "the correction.",
        _nullable(_parse_query),
        "queue_query",
        default_doc="from preset, else `null`",
    ),
    _Field(
        "runningQuery",
        "string",
        None,
        _QUERY_RULE + ", or null; required when queueQuery is set",
        "PromQL for requests running (denominator of the saturation correction).",
        _nullable(_parse_query),
        "running_query",
        default_doc="from preset, else `null`",
    ),
    _Field(
        "targetPerPod",
        "number",
        None,
        _TARGET_PER_POD_RULE,
        "Demand one pod should carry; replicas needed = ceil(forecast / targetPerPod). "
        "`null` reads the HPA's own target for `hpaMetric`.",
        _parse_target_per_pod,
        "target_per_pod",
    ),
    _Field(
        "hpaMetric",
        "string",
        None,
        "must be a metric name of at most 253 characters ([a-zA-Z_:][a-zA-Z0-9_:.-/]*), or null; "
        "required when targetPerPod is null",
        "The HPA metric whose target is used when `targetPerPod` is null.",
        _nullable(
            _pattern_parser(
                _METRIC_NAME_RE,
                253,
                "must be a metric name of at most 253 characters ([a-zA-Z_:][a-zA-Z0-9_:.-/]*), "
                "or null; required when targetPerPod is null",
            )
        ),
        "hpa_metric",
        default_doc="from preset, else `null`",
    ),
)


# ---- targets -----------------------------------------------------------------------------------

_SELECTOR_RULE: Final = (
    "must be a mapping of Prometheus label names ([a-zA-Z_][a-zA-Z0-9_]*, not 'namespace') "
    f"to non-empty strings of at most {_MAX_TEXT_LEN} characters"
)


def _parse_selector(value: object, ctx: _Ctx, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise _Invalid(_SELECTOR_RULE)
    pairs: list[tuple[str, str]] = []
    ok = True
    for key, item in value.items():
        item_path = _join(path, key)
        if not isinstance(key, str) or not _LABEL_NAME_RE.fullmatch(key) or key == "namespace":
            ctx.add(item_path, key, _SELECTOR_RULE)
            ok = False
        elif not isinstance(item, str) or not 0 < len(item) <= _MAX_TEXT_LEN:
            ctx.add(item_path, item, _SELECTOR_RULE)
            ok = False
        else:
            pairs.append((key, item))
    if not ok:
        raise _Invalid(None)
    return tuple(sorted(pairs))


_TARGET_ID_RULE: Final = (
    "must be 1-253 characters from letters, digits, '.', '_', '-' and '/', starting with a "
    "letter or digit, unique across targets"
)

_HPA_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _Field(
        "namespace",
        "string",
        "",
        _DNS_LABEL_RULE,
        "Namespace of the HorizontalPodAutoscaler.",
        _pattern_parser(_DNS_LABEL_RE, 63, _DNS_LABEL_RULE),
        "namespace",
        required=True,
    ),
    _Field(
        "name",
        "string",
        "",
        _DNS_SUBDOMAIN_RULE,
        "Name of the HorizontalPodAutoscaler (autoscaling/v2).",
        _parse_dns_subdomain,
        "name",
        required=True,
    ),
)

_TARGET_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _section(
        "hpa",
        "mapping",
        "must be a mapping {namespace, name}; one target per HPA",
        "The HPA whose minReplicas is managed.",
        required=True,
    ),
    _Field(
        "name",
        "string",
        None,
        _TARGET_ID_RULE,
        "Display id of the target (logs, metrics, events).",
        _pattern_parser(_TARGET_ID_RE, 253, _TARGET_ID_RULE),
        "id",
        default_doc="`<namespace>/<name>`",
    ),
    _boolean_field(
        "enabled",
        "enabled",
        True,
        "A disabled target is left alone; its base minReplicas is restored.",
    ),
    _Field(
        "selector",
        "mapping",
        (),
        _SELECTOR_RULE,
        'Label equality matchers for the target\'s pods; `namespace="<hpa.namespace>"` is '
        "always added. Together they replace `${matchers}` in queries.",
        _parse_selector,
        "selector",
        default_doc="`{}`",
    ),
    _section(
        "signals",
        "list of signals",
        "must be a non-empty list of signals with unique names",
        "Demand signals; the largest replica need across them counts.",
    ),
)


# ---- prometheus and controller -----------------------------------------------------------------

_URL_RULE: Final = (
    "must be an http:// or https:// URL with a host, without credentials, query or fragment"
)


def _parse_url(value: object, ctx: _Ctx, path: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 2048:
        raise _Invalid(_URL_RULE)
    if any(char.isspace() or ord(char) < 32 for char in value):
        raise _Invalid(_URL_RULE)
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port
    except ValueError:
        raise _Invalid(_URL_RULE) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid(_URL_RULE)
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise _Invalid(_URL_RULE)
    return value


_FILE_RULE: Final = f"must be an absolute file path of at most {_MAX_PATH_LEN} characters"


def _parse_file(value: object, ctx: _Ctx, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_PATH_LEN:
        raise _Invalid(_FILE_RULE)
    if not value.startswith("/") or any(ord(char) < 32 for char in value):
        raise _Invalid(_FILE_RULE)
    return value


_HEADERS_RULE: Final = (
    "must be a mapping of HTTP header names to strings without line breaks; "
    "Authorization, Proxy-Authorization and Cookie are not allowed (use bearerTokenFile or "
    "basicAuth)"
)


def _parse_headers(value: object, ctx: _Ctx, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise _Invalid(_HEADERS_RULE)
    pairs: list[tuple[str, str]] = []
    ok = True
    for key, item in value.items():
        item_path = _join(path, key)
        if (
            not isinstance(key, str)
            or len(key) > 256
            or not _HEADER_NAME_RE.fullmatch(key)
            or key.lower() in _FORBIDDEN_HEADERS
        ):
            ctx.add(item_path, key, _HEADERS_RULE)
            ok = False
        elif (
            not isinstance(item, str) or len(item) > 8192 or any(char in item for char in "\r\n\0")
        ):
            ctx.add(item_path, item, _HEADERS_RULE, secret=True)
            ok = False
        else:
            pairs.append((key, item))
    if not ok:
        raise _Invalid(None)
    return tuple(pairs)


_BASIC_AUTH_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _Field(
        "username",
        "string",
        "",
        f"must be a non-empty string of at most {_MAX_TEXT_LEN} characters without line breaks",
        "Basic-auth user name.",
        _pattern_parser(
            re.compile(r"[^\r\n\0:]+"),
            _MAX_TEXT_LEN,
            f"must be a non-empty string of at most {_MAX_TEXT_LEN} characters without line breaks",
        ),
        "username",
        required=True,
    ),
    _Field(
        "passwordFile",
        "string",
        "",
        _FILE_RULE,
        "File holding the basic-auth password (mount a Secret).",
        _parse_file,
        "password_file",
        required=True,
        secret=True,
    ),
)

_PROMETHEUS_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _Field(
        "url",
        "string",
        "",
        _URL_RULE,
        "Base URL of the Prometheus HTTP API (Prometheus, Thanos Query, Mimir...).",
        _parse_url,
        "url",
        required=True,
        secret=True,
    ),
    _duration_field(
        "timeout", "timeout_seconds", "10s", (1, 300), "Timeout of one Prometheus request."
    ),
    _Field(
        "bearerTokenFile",
        "string",
        None,
        _FILE_RULE + ", or null; not together with basicAuth",
        "File holding a bearer token, re-read on each request (mount a Secret).",
        _parse_file,
        "bearer_token_file",
        secret=True,
    ),
    _section(
        "basicAuth",
        "mapping",
        "must be a mapping {username, passwordFile}, or null; not together with bearerTokenFile",
        "HTTP basic authentication.",
    ),
    _Field(
        "caBundle",
        "string",
        None,
        _FILE_RULE + ", or null; not together with verifyTls: false",
        "PEM file of CA certificates to trust (instead of the system's).",
        _parse_file,
        "ca_bundle",
    ),
    _boolean_field("verifyTls", "verify_tls", True, "Verify the server's TLS certificate."),
    _Field(
        "headers",
        "mapping",
        (),
        _HEADERS_RULE,
        "Extra HTTP headers, e.g. `X-Scope-OrgID` for multi-tenant Mimir/Cortex/Thanos. "
        "Values are never shown in errors.",
        _parse_headers,
        "headers",
        default_doc="`{}`",
    ),
)

_HPA_WATCH_RULE: Final = "must be one of: cluster, namespaces, off"


def _parse_hpa_watch(value: object, ctx: _Ctx, path: str) -> str:
    # YAML 1.1 reads a bare `off` as false: take it as the word the user wrote.
    if value is False:
        return "off"
    if value not in {"cluster", "namespaces", "off"}:
        raise _Invalid(_HPA_WATCH_RULE)
    return str(value)


_CONTROLLER_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _integer_field(
        "metricsPort", "metrics_port", 8080, (1, 65535), "Port of the `/metrics` endpoint."
    ),
    _Field(
        "leaseName",
        "string",
        "predictive-scaler",
        _DNS_SUBDOMAIN_RULE,
        "Name of the coordination.k8s.io Lease used for leader election.",
        _parse_dns_subdomain,
        "lease_name",
    ),
    _Field(
        "leaseNamespace",
        "string",
        None,
        _DNS_LABEL_RULE + ", or null",
        "Namespace of the Lease; `null` means the controller's own namespace.",
        _nullable(_pattern_parser(_DNS_LABEL_RE, 63, _DNS_LABEL_RULE + ", or null")),
        "lease_namespace",
    ),
    _duration_field(
        "leaseDuration",
        "lease_duration_seconds",
        "15s",
        (5, 300),
        "How long a leader's Lease is valid without renewal.",
    ),
    _duration_field(
        "renewPeriod",
        "renew_period_seconds",
        "5s",
        (1, 300),
        "How often the leader renews (and candidates retry) the Lease.",
    ),
    _Field(
        "hpaWatch",
        "string",
        "cluster",
        _HPA_WATCH_RULE,
        "How HPAs are read: `cluster` one list + watch of all namespaces (the shipped "
        "ClusterRole allows it); `namespaces` one per namespace that has a target (enough "
        "with a Role per namespace); `off` a GET per target per cycle (RBAC without "
        "list/watch). Until the watch has synced, and while it is broken, reads are GETs.",
        _parse_hpa_watch,
        "hpa_watch",
    ),
)

_CONTROLLER_CROSS: Final = (_ordered("renewPeriod", "leaseDuration", strict=True),)

_ROOT_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _section(
        "defaults",
        "mapping",
        "must be a mapping of policy keys, or null",
        "Policy for every target (see Policy).",
    ),
    _section(
        "targets",
        "list",
        "must be a list of targets, or null; one target per HPA, ids unique",
        "The HPAs to manage (see Targets). An empty list manages nothing.",
    ),
    _section(
        "prometheus",
        "mapping",
        "must be a mapping, or null",
        "How to reach Prometheus. `null`: the command line decides.",
    ),
    _section(
        "controller",
        "mapping",
        "must be a mapping, or null",
        "Process settings (metrics port, leader election).",
    ),
)
