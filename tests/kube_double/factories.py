"""Object factories and a kubeconfig writer for tests that talk to the double."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KV_CACHE_METRIC = "gpu_cache_usage_perc"


def make_hpa(
    namespace: str,
    name: str,
    min_replicas: int | None = 1,
    max_replicas: int = 10,
    target_average_value: str = "700m",
    *,
    metric_name: str = KV_CACHE_METRIC,
    deployment: str | None = None,
    annotations: dict[str, str] | None = None,
    behavior: dict[str, Any] | None = None,
    current_replicas: int | None = None,
    desired_replicas: int | None = None,
) -> dict[str, Any]:
    """A valid ``autoscaling/v2`` HPA for a NIM-like Deployment, scaling on the Pods metric
    ``gpu_cache_usage_perc`` with an ``AverageValue`` target. ``min_replicas=None`` leaves the
    field out (the server's default is 1); a status is added when replica counts are given."""
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment or name,
        },
        "maxReplicas": max_replicas,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric_name},
                    "target": {"type": "AverageValue", "averageValue": target_average_value},
                },
            }
        ],
        "behavior": behavior
        if behavior is not None
        else {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 600,
                "selectPolicy": "Min",
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
            },
        },
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    hpa: dict[str, Any] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": deployment or name},
        },
        "spec": spec,
    }
    if annotations:
        hpa["metadata"]["annotations"] = dict(annotations)
    if current_replicas is not None or desired_replicas is not None:
        status: dict[str, Any] = {"desiredReplicas": desired_replicas or current_replicas or 0}
        if current_replicas is not None:
            status["currentReplicas"] = current_replicas
        hpa["status"] = status
    return hpa


def make_deployment(
    namespace: str,
    name: str,
    match_labels: dict[str, str] | None = None,
    *,
    replicas: int = 1,
    match_expressions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A valid ``apps/v1`` Deployment (a NIM-like pod template) whose pods carry
    ``match_labels`` (default ``{"app": name}``); its scale subresource reports them as
    ``status.selector``."""
    labels = dict(match_labels or {"app": name})
    selector: dict[str, Any] = {"matchLabels": labels}
    if match_expressions:
        selector["matchExpressions"] = match_expressions
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": selector,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": "nim", "image": "nvcr.io/nim/llm:1"}]},
            },
        },
    }


def make_configmap(namespace: str, name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    """A core/v1 ConfigMap."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data or {}),
    }


def write_kubeconfig(
    path: str | Path,
    server_url: str,
    token: str,
    *,
    context: str = "kube-double",
    namespace: str = "default",
) -> Path:
    """Write a kubeconfig whose current context points at ``server_url`` with a bearer token.
    JSON is valid YAML, so no YAML writer is needed."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": context, "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    target = Path(path)
    target.write_text(json.dumps(config, indent=2))
    return target
