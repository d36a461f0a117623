"""The JSON Schema (draft 2020-12) of ``config.yaml``, derived from the config field tables.

A pure data layer: no I/O. Editors (yaml-language-server) use the published copy,
``deploy/config.schema.json``, to complete and check a configuration while it is written;
``predictive-scaler validate-config`` stays the authority. Each key's type, default, range,
choices and description come from the same :class:`~predictive_scaler.config.schema._Field`
entries that validate it and render docs/configuration.md, so the three cannot list different
keys. Values whose check is a parser of its own (queries, URLs, paths, label names) get their
shape from :data:`_SHAPES`, built on the validation's own patterns and limits (``fields``); a
field with neither fails :func:`config_schema` at once, so a new key cannot be forgotten.

What a schema cannot say is left to ``validate-config`` and listed in the top-level
description: the rules between keys (``step × 10 ≤ history``, a signal's ``query`` or
``preset``...), uniqueness of targets and signal names, the range of a duration written as
text (``100d`` for ``history``), and integers written with a fraction (``4.0``), which JSON
Schema counts as integers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from predictive_scaler.config.durations import _DURATION_UNITS, format_duration
from predictive_scaler.config.fields import (
    _BASIC_AUTH_FIELDS,
    _CONTROLLER_CROSS,
    _CONTROLLER_FIELDS,
    _DNS_LABEL_RE,
    _DNS_SUBDOMAIN_RE,
    _FORBIDDEN_HEADERS,
    _HEADER_NAME_RE,
    _HPA_FIELDS,
    _LABEL_NAME_RE,
    _MAX_PATH_LEN,
    _MAX_QUERY_LEN,
    _MAX_TEXT_LEN,
    _METRIC_NAME_RE,
    _PROMETHEUS_FIELDS,
    _ROOT_FIELDS,
    _SIGNAL_FIELDS,
    _SIGNAL_NAME_RE,
    _TARGET_FIELDS,
    _TARGET_ID_RE,
)
from predictive_scaler.config.policy import _POLICY_CROSS, _POLICY_FIELDS, SEASONS
from predictive_scaler.config.presets import MATCHERS_PLACEHOLDER
from predictive_scaler.config.schema import _doc_default, _Field

__all__ = ["SCHEMA_ID", "config_schema"]

SCHEMA_ID: Final = (
    "https://raw.githubusercontent.com/predictive-scaler/predictive-scaler/main/"
    "deploy/config.schema.json"
)
"""``$id`` of the published schema (informational; editors are pointed at the file)."""

Json = dict[str, Any]

_NUMBER: Final = r"[0-9]+(?:\.[0-9]+)?"


def _duration_pattern() -> str:
    """A plain number of seconds, or units largest first, each at most once (config's order)."""
    units = "".join(f"(?:{_NUMBER}{unit})?" for unit in _DURATION_UNITS)
    return rf"^\s*(?:{_NUMBER}|(?=[0-9]){units})\s*$"


def _anchored(pattern: re.Pattern[str]) -> str:
    """The validation matches with ``fullmatch``; a JSON Schema pattern must anchor itself."""
    return f"^(?:{pattern.pattern})$"


def _text(pattern: re.Pattern[str], max_len: int) -> Json:
    return {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": _anchored(pattern)}


def _nullable(shape: Json) -> Json:
    # Keywords of one type ignore values of another, so one node (one clear error) suffices.
    return {**shape, "type": [shape["type"], "null"]}


def _any_case(word: str) -> str:
    return "".join(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() else re.escape(ch) for ch in word)


_QUERY: Final[Json] = {
    "type": "string",
    "minLength": 1,
    "maxLength": _MAX_QUERY_LEN,
    # Not blank, and every "$" is "$$" or the one placeholder.
    "pattern": r"^(?=[\s\S]*\S)(?:[^$]|\$\$|" + re.escape(MATCHERS_PLACEHOLDER) + r")*$",
}
_FILE: Final[Json] = {
    "type": "string",
    "minLength": 1,
    "maxLength": _MAX_PATH_LEN,
    "pattern": r"^/[^\x00-\x1f]*$",
}
_DNS_LABEL: Final = _text(_DNS_LABEL_RE, 63)
_DNS_SUBDOMAIN: Final = _text(_DNS_SUBDOMAIN_RE, 253)
_FORBIDDEN_HEADER: Final = "^(?:" + "|".join(map(_any_case, _FORBIDDEN_HEADERS)) + ")$"
_DATETIME: Final[Json] = {
    "type": "string",
    "maxLength": 64,
    # fromisoformat with an offset: the date, a time, then Z or +hh:mm.
    "pattern": (
        r"^\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
        r"(?:Z|[+-]\d{2}:?\d{2})\s*$"
    ),
}

_SHAPES: Final[Mapping[tuple[str, str], Json]] = {
    ("policy", "seasons"): {
        "type": "array",
        "items": {"enum": list(SEASONS)},
        "uniqueItems": True,
        "maxItems": len(SEASONS),
    },
    ("policy", "exclude"): {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "start": _DATETIME,
                "end": _DATETIME,
                "reason": {"type": "string", "maxLength": _MAX_TEXT_LEN},
            },
            "required": ["start", "end"],
            "additionalProperties": False,
        },
    },
    ("policy", "objective"): _nullable(
        {
            "type": "object",
            "anyOf": [
                {
                    "properties": {
                        "maxShortfallShare": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "exclusiveMaximum": 1,
                        }
                    },
                    "required": ["maxShortfallShare"],
                    "additionalProperties": False,
                },
                {
                    "properties": {"shortfallPrice": {"type": "number", "exclusiveMinimum": 0}},
                    "required": ["shortfallPrice"],
                    "additionalProperties": False,
                },
            ],
        }
    ),
    ("target", "name"): _text(_TARGET_ID_RE, 253),
    ("target", "selector"): {
        "type": "object",
        "propertyNames": {"pattern": _anchored(_LABEL_NAME_RE), "not": {"const": "namespace"}},
        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": _MAX_TEXT_LEN},
    },
    ("hpa", "namespace"): _DNS_LABEL,
    ("hpa", "name"): _DNS_SUBDOMAIN,
    ("signal", "name"): _text(_SIGNAL_NAME_RE, 63),
    ("signal", "query"): _QUERY,
    ("signal", "queueQuery"): _nullable(_QUERY),
    ("signal", "runningQuery"): _nullable(_QUERY),
    ("signal", "targetPerPod"): _nullable(
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000}
    ),
    ("signal", "hpaMetric"): _nullable(_text(_METRIC_NAME_RE, 253)),
    ("prometheus", "url"): {
        "type": "string",
        "minLength": 1,
        "maxLength": 2048,
        # Scheme, a host without credentials, an optional path; no query, fragment or spaces.
        "pattern": r"^[hH][tT][tT][pP][sS]?://[^/?#@\s]+(?:/[^?#\s]*)?$",
    },
    ("prometheus", "bearerTokenFile"): _nullable(_FILE),
    ("prometheus", "caBundle"): _nullable(_FILE),
    ("prometheus", "headers"): {
        "type": "object",
        "propertyNames": {
            "maxLength": 256,
            "pattern": _anchored(_HEADER_NAME_RE),
            "not": {"pattern": _FORBIDDEN_HEADER},
        },
        "additionalProperties": {"type": "string", "maxLength": 8192, "pattern": r"^[^\r\n\x00]*$"},
    },
    ("basicAuth", "username"): {
        "type": "string",
        "minLength": 1,
        "maxLength": _MAX_TEXT_LEN,
        "pattern": r"^[^\r\n\x00:]+$",
    },
    ("basicAuth", "passwordFile"): _FILE,
    ("controller", "leaseName"): _DNS_SUBDOMAIN,
    # The validation takes YAML 1.1's bare `off` (false) as "off"; editors read YAML 1.2 (a string).
    ("controller", "hpaWatch"): {"enum": ["cluster", "namespaces", "off", False]},
    ("controller", "leaseNamespace"): _nullable(_DNS_LABEL),
}
"""Shapes of the values checked by a parser of their own, keyed by (table, key)."""


def _value_shape(table: str, item: _Field[Any]) -> Json:
    """The JSON Schema of one field's value: from its metadata, else from :data:`_SHAPES`."""
    if (table, item.key) in _SHAPES:
        return dict(_SHAPES[table, item.key])
    if item.choices:
        return {"type": "string", "enum": list(item.choices)}
    if item.kind == "boolean":
        return {"type": "boolean"}
    if item.kind == "integer" and item.bounds is not None:
        low, high = item.bounds
        return {"type": "integer", "minimum": int(low), "maximum": int(high)}
    if item.kind == "number" and item.bounds is not None:
        low, high = item.bounds
        if item.exclusive:
            return {"type": "number", "exclusiveMinimum": low, "exclusiveMaximum": high}
        return {"type": "number", "minimum": low, "maximum": high}
    if item.kind == "duration" and item.bounds is not None:
        low, high = item.bounds
        # A number of seconds in range, or text in the validation's duration syntax.
        return {
            "type": ["number", "string"],
            "minimum": low,
            "maximum": high,
            "maxLength": 64,
            "pattern": _duration_pattern(),
        }
    raise LookupError(f"config_schema: no JSON Schema for {table}.{item.key} ({item.kind})")


def _default(item: _Field[Any]) -> tuple[bool, Any]:
    """The field's default as JSON, when its field table states one as a value."""
    if item.required or item.parse is None:
        return False, None
    if item.default_doc is not None:
        literal: dict[str, Any] = {"`[]`": [], "`{}`": {}, "`null`": None}
        return (True, literal[item.default_doc]) if item.default_doc in literal else (False, None)
    value = item.default
    if item.kind == "duration" and isinstance(value, float):
        return True, format_duration(value)
    if isinstance(value, tuple):
        return True, list(value)
    return True, value


def _description(item: _Field[Any]) -> str:
    default = _doc_default(item)
    parts = [item.doc, f"Rule: {item.rule}."]
    if default:
        parts.append(f"Default: {default.replace('`', '')}.")
    return " ".join(parts)


def _property(table: str, item: _Field[Any], section: Json | None = None) -> Json:
    shape = section if section is not None else _value_shape(table, item)
    prop: Json = {"description": _description(item), **shape}
    has_default, default = _default(item)
    if has_default:
        prop["default"] = default
    return prop


def _object(
    table: str,
    fields: Iterable[_Field[Any]],
    sections: Mapping[str, Json] | None = None,
    *,
    nullable: bool = False,
) -> Json:
    """A closed mapping (the validation rejects unknown keys at every level)."""
    sections = sections or {}
    fields = tuple(fields)
    properties = {item.key: _property(table, item, sections.get(item.key)) for item in fields}
    node: Json = {
        "type": ["object", "null"] if nullable else "object",
        "properties": properties,
        "additionalProperties": False,
    }
    required = [item.key for item in fields if item.required]
    if required:
        node["required"] = required
    return node


def _ref(name: str) -> Json:
    return {"$ref": f"#/$defs/{name}"}


def _limits() -> str:
    """What only ``validate-config`` checks, for the schema's description."""
    rules = [
        *(rule.doc for rule in _POLICY_CROSS),
        *(f"controller: {rule.doc}" for rule in _CONTROLLER_CROSS),
        "targets unique by HPA and by id; signal names unique within a target; two enabled "
        "targets in one namespace must not have selectors of the same pods (equal, or one's "
        "labels a subset of the other's)",
        "a signal needs the queries its kind requires or a preset, and no query key its kind "
        "does not read; queueQuery needs runningQuery; targetPerPod and hpaMetric not both null",
        "prometheus.bearerTokenFile excludes basicAuth; caBundle excludes verifyTls: false",
        "a duration written as text (100d) is checked for form here, for its range there",
        "integers written with a fraction (4.0) and exclusions with start >= end",
    ]
    return "; ".join(rules)


def config_schema() -> Json:
    """The JSON Schema (draft 2020-12) of the configuration document."""
    policy = _object("policy", _POLICY_FIELDS, nullable=True)
    hpa = _object("hpa", _HPA_FIELDS)
    signal = _object("signal", _SIGNAL_FIELDS)
    signals = {"type": "array", "minItems": 1, "items": _ref("signal")}
    target = _object("target", _TARGET_FIELDS, {"hpa": _ref("hpa"), "signals": signals})
    # Any policy key may be repeated on a target, overriding `defaults` there.
    target["properties"].update(policy["properties"])
    basic_auth = _object("basicAuth", _BASIC_AUTH_FIELDS, nullable=True)
    prometheus = _object(
        "prometheus", _PROMETHEUS_FIELDS, {"basicAuth": _ref("basicAuth")}, nullable=True
    )
    controller = _object("controller", _CONTROLLER_FIELDS, nullable=True)
    root = _object(
        "root",
        _ROOT_FIELDS,
        {
            "defaults": _ref("policy"),
            "targets": {"type": ["array", "null"], "items": _ref("target")},
            "prometheus": _ref("prometheus"),
            "controller": _ref("controller"),
        },
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "predictive-scaler config.yaml",
        "description": (
            "Generated by `predictive-scaler config-schema` from the validation's field "
            "tables; `predictive-scaler validate-config` is the authority. Not expressible "
            "here, checked only by validate-config: " + _limits() + "."
        ),
        **root,
        "$defs": {
            "policy": policy,
            "target": target,
            "hpa": hpa,
            "signal": signal,
            "prometheus": prometheus,
            "basicAuth": basic_auth,
            "controller": controller,
        },
    }
