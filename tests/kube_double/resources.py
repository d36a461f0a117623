"""The resource types the double serves, and the URL grammar of the Kubernetes REST API."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (``group/version``, ``plural``) and the kind it stores."""

    group: str
    version: str
    plural: str
    kind: str
    has_status: bool = False
    has_scale: bool = False
    """Serves the ``scale`` subresource (GET only: autoscaling/v1 Scale)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``horizontalpodautoscalers.autoscaling`` as in the API server's messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


HPA = ResourceType("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True)
CONFIGMAP = ResourceType("", "v1", "configmaps", "ConfigMap")
CORE_EVENT = ResourceType("", "v1", "events", "Event")
EVENTS_V1_EVENT = ResourceType("events.k8s.io", "v1", "events", "Event")
LEASE = ResourceType("coordination.k8s.io", "v1", "leases", "Lease")
DEPLOYMENT = ResourceType("apps", "v1", "deployments", "Deployment", True, has_scale=True)

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    HPA,
    CONFIGMAP,
    CORE_EVENT,
    EVENTS_V1_EVENT,
    LEASE,
    DEPLOYMENT,
)
_BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in RESOURCE_TYPES}
_BY_KIND = {(rt.api_version, rt.kind): rt for rt in RESOURCE_TYPES}


def by_kind(api_version: str, kind: str) -> ResourceType:
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise KeyError(f"the double does not serve {api_version} {kind}") from None


@dataclass(frozen=True)
class ParsedPath:
    """A resource URL: ``/api/v1/namespaces/{ns}/{plural}/{name}/{subresource}`` and friends."""

    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str


def parse_path(path: str) -> ParsedPath | None:
    """Split a request path; ``None`` for anything that is not a served resource URL."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    resource = _BY_PATH.get((group, version, rest[0]))
    if resource is None:
        return None
    name = rest[1] if len(rest) >= 2 else None
    subresource = rest[2] if len(rest) == 3 else ""
    if subresource and not (
        (subresource == "status" and resource.has_status)
        or (subresource == "scale" and resource.has_scale)
    ):
        return None
    if namespace is None and name is not None:
        return None  # every served resource is namespaced
    return ParsedPath(resource, namespace, name, subresource)
