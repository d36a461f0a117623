"""Validation of stored objects: the upstream OpenAPI schema (strict) plus server-side rules.

Schema checks use the ``kubernetes_validate`` package with a pinned Kubernetes version; the
semantic checks copy the few rules of the real API server's validation code that matter here
(``pkg/apis/autoscaling/validation``, ``pkg/apis/core/validation/events.go``, leases, names).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import referencing
from kubernetes_validate import utils as kv_utils

#: Kubernetes version whose OpenAPI schemas the double enforces (shipped by kubernetes-validate;
#: kubernetes-asyncio 36 is generated from the same release line).
KUBERNETES_VERSION = "1.36.0"

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_MAX_ANNOTATIONS_BYTES = 256 * 1024


@dataclass(frozen=True)
class Cause:
    """One field error, as in ``Status.details.causes``."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"


class InvalidObject(Exception):
    """The object breaks the schema or a server-side rule (HTTP 422 Invalid)."""

    def __init__(self, causes: list[Cause]) -> None:
        super().__init__("; ".join(f"{c.field}: {c.message}" for c in causes))
        self.causes = causes


@functools.lru_cache(maxsize=64)
def _validator(kind: str, api_version: str, version: str) -> jsonschema.protocols.Validator:
    schema_dir = f"v{version}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kv_utils.schema_contents(
        f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{api}.json", version
    )
    definitions = kv_utils.schema_contents(
        f"kubernetes-json-schema/{schema_dir}/_definitions.json", version
    )
    registry: referencing.Registry[Any] = referencing.Registry()
    registry = referencing.Resource.from_contents(schema) @ registry
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[Cause]:
    """Strict OpenAPI schema check (unknown fields rejected) with kubernetes-validate's schemas."""
    validator = _validator(obj["kind"], obj["apiVersion"], version)
    causes = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path))):
        field = ".".join(str(p) for p in error.absolute_path) or "<root>"
        reason = "FieldValueNotSupported" if "Additional properties" in error.message else None
        causes.append(Cause(field, error.message, reason or "FieldValueInvalid"))
    return causes


def _metadata_errors(obj: dict[str, Any]) -> list[Cause]:
    meta = obj.get("metadata") or {}
    causes = []
    name = meta.get("name") or ""
    if not name:
        causes.append(
            Cause("metadata.name", "name or generateName is required", "FieldValueRequired")
        )
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        causes.append(
            Cause(
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower "
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )
        )
    annotations = meta.get("annotations") or {}
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > _MAX_ANNOTATIONS_BYTES:
        causes.append(Cause("metadata.annotations", "Too long: must have at most 262144 bytes"))
    for key in list(annotations) + list(meta.get("labels") or {}):
        prefix, _, local = key.rpartition("/")
        bad_prefix = bool(prefix) and not _DNS1123_SUBDOMAIN.match(prefix)
        if bad_prefix or len(local) > 63 or not _QUALIFIED_NAME.match(local):
            causes.append(Cause("metadata", f"Invalid value: {key!r}: not a qualified name"))
    return causes


def _hpa_errors(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes = []
    ref = spec.get("scaleTargetRef") or {}
    for key in ("kind", "name"):
        if not ref.get(key):
            causes.append(
                Cause(f"spec.scaleTargetRef.{key}", "Required value", "FieldValueRequired")
            )
    max_replicas = spec.get("maxReplicas")
    min_replicas = spec.get("minReplicas", 1)
    if not isinstance(max_replicas, int) or max_replicas < 1:
        causes.append(
            Cause("spec.maxReplicas", f"Invalid value: {max_replicas}: must be greater than 0")
        )
    if isinstance(min_replicas, int) and min_replicas < 1:
        causes.append(
            Cause(
                "spec.minReplicas",
                f"Invalid value: {min_replicas}: must be greater than or equal to 1",
            )
        )
    if (
        isinstance(min_replicas, int)
        and isinstance(max_replicas, int)
        and min_replicas > max_replicas
    ):
        causes.append(
            Cause(
                "spec.maxReplicas",
                f"Invalid value: {max_replicas}: must be greater than or equal to `minReplicas`",
            )
        )
    sources = {
        "Object": "object",
        "Pods": "pods",
        "Resource": "resource",
        "ContainerResource": "containerResource",
        "External": "external",
    }
    for index, metric in enumerate(spec.get("metrics") or []):
        field = f"spec.metrics[{index}]"
        metric_type = metric.get("type")
        source_key = sources.get(metric_type or "")
        if source_key is None:
            causes.append(Cause(f"{field}.type", f"Unsupported value: {metric_type!r}"))
            continue
        source = metric.get(source_key)
        if not source:
            causes.append(Cause(f"{field}.{source_key}", "Required value", "FieldValueRequired"))
            continue
        target = source.get("target") or {}
        target_type = target.get("type")
        if target_type not in {"Utilization", "Value", "AverageValue"}:
            causes.append(
                Cause(f"{field}.{source_key}.target.type", f"Unsupported value: {target_type!r}")
            )
        if metric_type == "Pods" and target_type != "AverageValue":
            causes.append(
                Cause(
                    f"{field}.pods.target.type",
                    f"Invalid value: {target_type!r}: must be AverageValue for Pods metrics",
                )
            )
        if target_type == "AverageValue" and target.get("averageValue") in (None, "", "0", 0):
            causes.append(
                Cause(
                    f"{field}.{source_key}.target.averageValue",
                    "Required value: must specify a positive target averageValue",
                    "FieldValueRequired",
                )
            )
    return causes


def _core_event_errors(obj: dict[str, Any]) -> list[Cause]:
    causes = []
    involved = obj.get("involvedObject") or {}
    namespace = (obj.get("metadata") or {}).get("namespace")
    if involved.get("namespace") and involved["namespace"] != namespace:
        causes.append(Cause("involvedObject.namespace", "does not match event.namespace"))
    if obj.get("eventTime"):
        for key in ("reportingComponent", "reportingInstance", "action", "reason"):
            if not obj.get(key):
                causes.append(Cause(key, "Required value", "FieldValueRequired"))
    return causes


def _events_v1_errors(obj: dict[str, Any]) -> list[Cause]:
    causes = []
    for key in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
        if not obj.get(key):
            causes.append(Cause(key, "Required value", "FieldValueRequired"))
    if len(obj.get("note") or "") > 1024:
        causes.append(Cause("note", "Too long: may not be longer than 1024"))
    regarding = obj.get("regarding") or {}
    namespace = (obj.get("metadata") or {}).get("namespace")
    if regarding.get("namespace") and regarding["namespace"] != namespace:
        causes.append(Cause("regarding.namespace", "does not match event.namespace"))
    return causes


def _lease_errors(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        causes.append(Cause("spec.leaseDurationSeconds", "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        causes.append(Cause("spec.leaseTransitions", "must be greater than or equal to 0"))
    return causes


_SEMANTIC = {
    ("autoscaling/v2", "HorizontalPodAutoscaler"): _hpa_errors,
    ("v1", "Event"): _core_event_errors,
    ("events.k8s.io/v1", "Event"): _events_v1_errors,
    ("coordination.k8s.io/v1", "Lease"): _lease_errors,
}


def validate_object(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Raise :class:`InvalidObject` when ``obj`` would be rejected by the real API server."""
    causes = schema_errors(obj, version)
    if not causes:
        causes = _metadata_errors(obj)
        semantic = _SEMANTIC.get((obj["apiVersion"], obj["kind"]))
        if semantic is not None:
            causes += semantic(obj)
    if causes:
        raise InvalidObject(causes)
