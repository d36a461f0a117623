"""An in-process Kubernetes API server double for tests (see ``server.KubeDouble``)."""

from .factories import (
    KV_CACHE_METRIC,
    make_configmap,
    make_deployment,
    make_hpa,
    write_kubeconfig,
)
from .fixtures import make_api_client
from .rbac import PolicyRule, RequestAttributes, RequestRecord
from .resources import RESOURCE_TYPES, ResourceType
from .server import DEFAULT_TOKEN, DEFAULT_USER, ApiError, InjectedFault, KubeDouble
from .validation import KUBERNETES_VERSION, InvalidObject, validate_object

__all__ = [
    "DEFAULT_TOKEN",
    "DEFAULT_USER",
    "KUBERNETES_VERSION",
    "KV_CACHE_METRIC",
    "RESOURCE_TYPES",
    "ApiError",
    "InjectedFault",
    "InvalidObject",
    "KubeDouble",
    "PolicyRule",
    "RequestAttributes",
    "RequestRecord",
    "ResourceType",
    "make_api_client",
    "make_configmap",
    "make_deployment",
    "make_hpa",
    "validate_object",
    "write_kubeconfig",
]
