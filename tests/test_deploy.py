"""The deployable artefacts: Dockerfile, kustomize manifests, RBAC, alerts, adapter rules,
example HPA and Grafana dashboard.

Every kustomization renders (``kubectl kustomize`` where kubectl exists, and the Python subset
renderer of ``tests/deploy_support.py``, which must agree with it), and every rendered object of a
built-in kind validates strictly against the OpenAPI schemas of the pinned Kubernetes release
(``kubernetes-validate``). Objects of CRD kinds (ServiceMonitor, PrometheusRule and cert-manager's
Issuer/Certificate), whose schemas ``kubernetes-validate`` does not ship, are checked with
targeted assertions instead; PrometheusRule expressions also go through ``promtool`` when it is
installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import numpy as np
import pytest
import yaml

from predictive_scaler.config import parse_config
from predictive_scaler.kube import KubeApiError, KubeClient, utc_now
from predictive_scaler.leader import LeaderElector
from predictive_scaler.publish import (
    ControllerMetrics,
    HealthState,
    SignalFigures,
    TargetFigures,
    bound_port,
    make_app,
    start_http_server,
)
from tests.deploy_support import (
    DEPLOY_DIR,
    KUBERNETES_VERSION,
    KUSTOMIZATIONS,
    PORTABLE,
    REPO_ROOT,
    SERVICE_ACCOUNT,
    Manifest,
    dockerignore_includes,
    find_object,
    find_objects,
    load_rbac_grants,
    load_rbac_rules,
    object_key,
    parse_dockerfile,
    promql_metric_names,
    render,
    render_with_kubectl,
    render_with_python,
)
from tests.kube_double.factories import make_configmap, make_hpa
from tests.kube_double.rbac import PolicyRule as DoublePolicyRule
from tests.kube_double.rbac import RequestAttributes, as_rule, rules_allow
from tests.kube_double.server import KubeDouble
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series

OVERLAYS = tuple(KUSTOMIZATIONS)
NAMESPACE = "predictive-scaler"
CONFIGMAP = "predictive-scaler-config"
LEASE = "predictive-scaler"
HPAS = "horizontalpodautoscalers"
HAS_KUBECTL = shutil.which("kubectl") is not None

#: Kinds served by CRDs: no upstream schema, structure asserted below.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
}

# --- metric names any query in deploy/ may use ------------------------------------------------

CONTROLLER_METRICS = {
    "predictive_scaler_forecast_mean",
    "predictive_scaler_forecast_upper",
    "predictive_scaler_recommended_min_replicas",
    "predictive_scaler_applied_min_replicas",
    "predictive_scaler_base_min_replicas",
    "predictive_scaler_forecast_abs_error",
    "predictive_scaler_forecast_coverage",
    "predictive_scaler_forecast_peak_coverage",
    "predictive_scaler_data_ok",
    "predictive_scaler_cycle_duration_seconds_bucket",
    "predictive_scaler_cycle_duration_seconds_sum",
    "predictive_scaler_cycle_duration_seconds_count",
    "predictive_scaler_cycle_errors_total",
    "predictive_scaler_patches_total",
    "predictive_scaler_config_valid",
    "predictive_scaler_is_leader",
    "predictive_scaler_targets",
    "predictive_scaler_config_reloads_total",
}
KUBE_STATE_METRICS = {
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}
NIM_METRICS = {
    "gpu_cache_usage_perc",
    "num_requests_running",
    "num_requests_waiting",
    "num_request_max",
    "prompt_tokens_total",
    "generation_tokens_total",
}
VLLM_METRICS = {
    "vllm:gpu_cache_usage_perc",
    "vllm:kv_cache_usage_perc",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
}
#: Names the adapter serves that are not Prometheus series of their own.
ADAPTER_METRICS = {"vllm_kv_cache_usage_perc"}
PROMETHEUS_AND_CADVISOR = {
    "up",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
}
KNOWN_METRICS = (
    CONTROLLER_METRICS | KUBE_STATE_METRICS | NIM_METRICS | VLLM_METRICS | PROMETHEUS_AND_CADVISOR
)

#: Labels each controller metric family carries (the contract with predictive_scaler's /metrics).
TARGET_LABELS = {"target", "target_namespace", "hpa"}

# --- the RBAC the controller needs, and nothing more ------------------------------------------
# (scope, apiGroup, resource, verb, resourceNames); scope "cluster" = ClusterRole via
# ClusterRoleBinding, otherwise the namespace of the RoleBinding.

EXPECTED_RBAC = {
    ("cluster", "autoscaling", HPAS, "get", ()),
    ("cluster", "autoscaling", HPAS, "list", ()),
    ("cluster", "autoscaling", HPAS, "watch", ()),
    ("cluster", "autoscaling", HPAS, "patch", ()),
    ("cluster", "", "events", "create", ()),
    ("cluster", "apps", "deployments/scale", "get", ()),
    (NAMESPACE, "", "configmaps", "list", (CONFIGMAP,)),
    (NAMESPACE, "", "configmaps", "watch", (CONFIGMAP,)),
    (NAMESPACE, "coordination.k8s.io", "leases", "get", (LEASE,)),
    (NAMESPACE, "coordination.k8s.io", "leases", "update", (LEASE,)),
    (NAMESPACE, "coordination.k8s.io", "leases", "create", ()),
}
#: What the external-metrics overlay adds, for delegated authentication and authorization:
#: the built-in ClusterRole system:auth-delegator (TokenReviews, SubjectAccessReviews) and the
#: built-in Role extension-apiserver-authentication-reader in kube-system, as
#: prometheus-adapter binds them. The reader Role's list and watch are upstream's (the
#: controller only gets the ConfigMap): tests/test_external_metrics_rbac.py pins which are used.
AUTH_CONFIGMAP = ("extension-apiserver-authentication",)
EXTERNAL_METRICS_RBAC = {
    ("cluster", "authentication.k8s.io", "tokenreviews", "create", ()),
    ("cluster", "authorization.k8s.io", "subjectaccessreviews", "create", ()),
    ("kube-system", "", "configmaps", "get", AUTH_CONFIGMAP),
    ("kube-system", "", "configmaps", "list", AUTH_CONFIGMAP),
    ("kube-system", "", "configmaps", "watch", AUTH_CONFIGMAP),
}
HPA_SERVICE_ACCOUNT = ("kube-system", "horizontal-pod-autoscaler")
#: The HPA controller's read of the served metrics (list of each, by name, everywhere).
HPA_EXTERNAL_METRICS_RBAC = {
    ("cluster", "external.metrics.k8s.io", metric, "list", ())
    for metric in (
        "predictive_scaler_forecast_upper",
        "predictive_scaler_forecast_mean",
        "predictive_scaler_recommended_min_replicas",
    )
}


def expected_rbac(overlay: str) -> set[tuple[str, str, str, str, tuple[str, ...]]]:
    """The controller's grants in ``overlay``."""
    return EXPECTED_RBAC | (EXTERNAL_METRICS_RBAC if overlay == "external-metrics" else set())


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered(overlay: str) -> list[Manifest]:
    return render(overlay)


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return render("base")


def _deployment(objects: list[Manifest]) -> Manifest:
    return find_object(objects, "Deployment", "predictive-scaler")


def _container(objects: list[Manifest]) -> Manifest:
    containers = _deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _config_text(objects: list[Manifest]) -> str:
    return str(find_object(objects, "ConfigMap", CONFIGMAP)["data"]["config.yaml"])


# ================================================================================ rendering


class TestRendering:
    @pytest.mark.parametrize("renderer", ["kubectl", "python"])
    def test_every_kustomization_renders(self, overlay: str, renderer: str) -> None:
        if renderer == "kubectl" and not HAS_KUBECTL:
            pytest.skip("kubectl is not installed; the Python renderer covers rendering")
        directory = KUSTOMIZATIONS[overlay]
        objects = (
            render_with_kubectl(directory)
            if renderer == "kubectl"
            else render_with_python(directory)
        )
        kinds = {obj["kind"] for obj in objects}
        assert {"Namespace", "ServiceAccount", "Deployment", "ConfigMap"} <= kinds
        keys = [object_key(obj) for obj in objects]
        assert len(keys) == len(set(keys))

    @pytest.mark.skipif(not HAS_KUBECTL, reason="kubectl is not installed")
    def test_python_renderer_agrees_with_kubectl(self, overlay: str) -> None:
        directory = KUSTOMIZATIONS[overlay]
        by_kubectl = {object_key(obj): obj for obj in render_with_kubectl(directory)}
        by_python = {object_key(obj): obj for obj in render_with_python(directory)}
        assert sorted(by_python) == sorted(by_kubectl)
        for key, obj in by_kubectl.items():
            assert by_python[key] == obj, key

    def test_namespaced_objects_live_in_the_controller_namespace(
        self, rendered: list[Manifest]
    ) -> None:
        for obj in rendered:
            namespace = obj["metadata"].get("namespace")
            if obj["kind"] in {"Namespace", "ClusterRole", "ClusterRoleBinding", "APIService"}:
                assert namespace is None, object_key(obj)
            elif (obj["kind"], obj["metadata"]["name"]) == (
                "RoleBinding",
                "predictive-scaler-auth-reader",
            ):
                assert namespace == "kube-system"  # beside the built-in Role it binds
            else:
                assert namespace == NAMESPACE, object_key(obj)

    def test_every_object_is_labelled(self, rendered: list[Manifest]) -> None:
        for obj in rendered:
            labels = obj["metadata"].get("labels") or {}
            assert labels.get("app.kubernetes.io/name") == "predictive-scaler", object_key(obj)


# ================================================================================ schemas


class TestSchemas:
    def test_builtin_kinds_validate_strictly(self, rendered: list[Manifest]) -> None:
        for obj in rendered:
            if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:  # pragma: no cover - on failure
                pytest.fail(f"{object_key(obj)}: {exc.message} at {list(exc.path)}")

    def test_only_known_crd_kinds_are_skipped(self, rendered: list[Manifest]) -> None:
        """A new kind must either have an upstream schema or a targeted test here."""
        for obj in rendered:
            kind = (obj["apiVersion"], obj["kind"])
            if kind in CRD_KINDS:
                with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)

    def test_schema_validation_catches_mistakes(self, base: list[Manifest]) -> None:
        """The validator really is strict: an unknown field fails."""
        deployment = _deployment(base)
        deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)

    def test_container_port_names_are_valid_service_names(self, rendered: list[Manifest]) -> None:
        """IANA_SVC_NAME (at most 15 characters): a rule the OpenAPI schema does not carry."""
        for port in _container(rendered)["ports"]:
            name = port["name"]
            assert len(name) <= 15, name
            assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name), name
            assert "--" not in name and re.search("[a-z]", name), name


# ================================================================================ the controller


class TestDeployment:
    def test_pod_security(self, rendered: list[Manifest]) -> None:
        pod = _deployment(rendered)["spec"]["template"]["spec"]
        pod_security = pod["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] > 0
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security.get("runAsUser", pod_security["runAsUser"]) > 0
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security.get("privileged", False) is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}

    def test_only_tmp_is_writable(self, rendered: list[Manifest]) -> None:
        pod = _deployment(rendered)["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for mount in _container(rendered)["volumeMounts"]:
            volume = volumes[mount["name"]]
            if mount["mountPath"] == "/tmp":
                assert "emptyDir" in volume
            else:
                assert mount.get("readOnly") is True, mount
                assert "emptyDir" not in volume and "hostPath" not in volume

    def test_command_line(self, rendered: list[Manifest], overlay: str) -> None:
        container = _container(rendered)
        assert "command" not in container  # the image's ENTRYPOINT is predictive-scaler
        args = container["args"]
        assert args[0] == "run"
        assert args[args.index("--config-map") + 1] == f"$(POD_NAMESPACE)/{CONFIGMAP}"
        assert args[args.index("--metrics-port") + 1] == "8080"
        assert args[args.index("--log-format") + 1] == "json"
        assert ("--dry-run" in args) == (overlay == "dry-run")
        # On every rolling update the old leader exits; restoring the base then would undo
        # the forecast for a few seconds. Uninstall restores explicitly (docs/operations.md).
        assert "--restore-on-exit" not in args

    def test_downward_api_env(self, rendered: list[Manifest]) -> None:
        env = {item["name"]: item for item in _container(rendered)["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    def test_blas_threads_follow_the_cpu_limit(self, rendered: list[Manifest]) -> None:
        """numpy/scipy size their thread pools to the node's CPUs unless told; under a 2-CPU
        limit that oversubscribes the quota. The Downward API hands them the limit."""
        container = _container(rendered)
        env = {item["name"]: item for item in container["env"]}
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            ref = env[name]["valueFrom"]["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu", name
            assert ref.get("containerName", container["name"]) == container["name"], name
            assert str(ref.get("divisor", "1")) == "1", name
        assert "cpu" in container["resources"]["limits"]

    def test_probes_and_resources(self, rendered: list[Manifest]) -> None:
        container = _container(rendered)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["http-metrics"] == 8080
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
        resources = container["resources"]
        assert resources["requests"] == {"cpu": "250m", "memory": "512Mi"}
        assert resources["limits"] == {"cpu": "2", "memory": "1Gi"}

    def test_replicas_spread_and_disruption_budget(self, rendered: list[Manifest]) -> None:
        deployment = _deployment(rendered)
        # Two replicas, one leader; every replica forecasts, so each can answer the
        # built-in External Metrics API too.
        assert deployment["spec"]["replicas"] == 2
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {item["topologyKey"] for item in spread} >= {"kubernetes.io/hostname"}
        for item in spread:
            assert item["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        budget = find_object(rendered, "PodDisruptionBudget", "predictive-scaler")
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    def test_service_and_service_monitor_reach_the_metrics_port(
        self, rendered: list[Manifest]
    ) -> None:
        pod_labels = _deployment(rendered)["spec"]["template"]["metadata"]["labels"]
        service = find_object(rendered, "Service", "predictive-scaler")
        assert service["spec"]["selector"].items() <= pod_labels.items()
        metrics_port = next(p for p in service["spec"]["ports"] if p["name"] == "http-metrics")
        assert metrics_port["port"] == 8080
        assert metrics_port["targetPort"] == "http-metrics"

        monitor = find_object(rendered, "ServiceMonitor", "predictive-scaler")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "http-metrics"
        assert endpoint["path"] == "/metrics"
        # Not needed (the series carry target_namespace), so not asked for.
        assert endpoint.get("honorLabels", False) is False
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    def test_namespace_enforces_restricted_pod_security(self, rendered: list[Manifest]) -> None:
        namespace = find_object(rendered, "Namespace", NAMESPACE)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
            "restricted"
        )


# ================================================================================ configuration


class TestConfigMap:
    def test_example_config_is_valid(self, rendered: list[Manifest]) -> None:
        config = parse_config(_config_text(rendered))
        (target,) = config.targets
        assert (target.namespace, target.name) == ("nim", "meta-llama3-8b-instruct")
        assert target.id == "nim/meta-llama3-8b-instruct"
        assert config.prometheus is not None
        assert (
            config.prometheus.url == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
        )

    def test_config_matches_the_manifests(self, rendered: list[Manifest]) -> None:
        config = parse_config(_config_text(rendered))
        ports = {p["name"]: p["containerPort"] for p in _container(rendered)["ports"]}
        assert config.controller.metrics_port == ports["http-metrics"]
        assert config.controller.lease_name == LEASE
        assert config.controller.lease_namespace in {None, NAMESPACE}

    def test_example_hpa_is_the_configured_target(self, base: list[Manifest]) -> None:
        config = parse_config(_config_text(base))
        hpa = _example_hpa()
        (target,) = config.targets
        assert (hpa["metadata"]["namespace"], hpa["metadata"]["name"]) == (
            target.namespace,
            target.name,
        )
        (signal,) = target.signals
        assert signal.target_per_pod is None  # read from the HPA's own Pods metric target
        pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if "pods" in m]
        assert signal.hpa_metric in pods_metrics


# ================================================================================ RBAC


def _expanded(grants: list[Any]) -> set[tuple[str, str, str, str, tuple[str, ...]]]:
    rows = set()
    for grant in grants:
        rule = grant.rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    rows.add(
                        (
                            grant.namespace or "cluster",
                            group,
                            resource,
                            verb,
                            tuple(rule.get("resourceNames", ())),
                        )
                    )
    return rows


class TestRbac:
    def test_grants_exactly_the_table(self, rendered: list[Manifest], overlay: str) -> None:
        assert _expanded(load_rbac_grants(objects=rendered)) == expected_rbac(overlay)

    def test_the_hpa_controller_may_read_the_metrics_only(
        self, rendered: list[Manifest], overlay: str
    ) -> None:
        grants = load_rbac_grants(service_account=HPA_SERVICE_ACCOUNT, objects=rendered)
        expected = HPA_EXTERNAL_METRICS_RBAC if overlay == "external-metrics" else set()
        assert _expanded(grants) == expected

    def test_no_wildcards_and_nothing_else_bound(self, rendered: list[Manifest]) -> None:
        for role in find_objects(rendered, "ClusterRole") + find_objects(rendered, "Role"):
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)
        hpa = {"kind": "ServiceAccount", "name": HPA_SERVICE_ACCOUNT[1], "namespace": "kube-system"}
        for binding in find_objects(rendered, "ClusterRoleBinding") + find_objects(
            rendered, "RoleBinding"
        ):
            if binding["metadata"]["name"] == "predictive-scaler-external-metrics-reader":
                assert binding["subjects"] == [hpa]
                continue
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT[1], "namespace": NAMESPACE}
            ]

    def test_load_rbac_rules_shape(self) -> None:
        rules = load_rbac_rules()
        assert rules, "the ServiceAccount is bound to no rule"
        for rule in rules:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}
            assert all(
                isinstance(v, list) and all(isinstance(s, str) for s in v) for v in rule.values()
            )
        assert load_rbac_rules("dry-run") == rules
        external = load_rbac_rules("external-metrics")
        assert all(rule in external for rule in rules)
        added = [rule for rule in external if rule not in rules]
        assert sorted((r["apiGroups"][0], r["resources"][0]) for r in added) == [
            ("", "configmaps"),
            ("authentication.k8s.io", "tokenreviews"),
            ("authorization.k8s.io", "subjectaccessreviews"),
        ]

    @pytest.mark.parametrize(
        ("verb", "group", "resource", "namespace", "name", "allowed"),
        [
            # HPAs, any namespace: list + watch (the informer), read by name and
            # merge-patch; never replace, create or delete.
            ("get", "autoscaling", HPAS, "nim", "meta-llama3-8b-instruct", True),
            ("patch", "autoscaling", HPAS, "llm", "chat", True),
            ("list", "autoscaling", HPAS, None, None, True),
            ("watch", "autoscaling", HPAS, None, None, True),
            ("watch", "autoscaling", HPAS, "nim", None, True),
            ("update", "autoscaling", HPAS, "nim", "x", False),
            ("delete", "autoscaling", HPAS, "nim", "x", False),
            ("create", "autoscaling", HPAS, "nim", None, False),
            ("patch", "autoscaling", f"{HPAS}/status", "nim", "x", False),
            # Events on HPAs in their namespaces.
            ("create", "", "events", "nim", None, True),
            ("create", "", "events", NAMESPACE, None, True),
            ("patch", "", "events", "nim", "hpa.17a", False),
            ("delete", "", "events", "nim", "hpa.17a", False),
            ("create", "events.k8s.io", "events", "nim", None, False),
            # Its own ConfigMap only: list/watch with fieldSelector metadata.name.
            ("get", "", "configmaps", NAMESPACE, CONFIGMAP, False),
            ("watch", "", "configmaps", NAMESPACE, CONFIGMAP, True),
            ("list", "", "configmaps", NAMESPACE, CONFIGMAP, True),
            ("list", "", "configmaps", NAMESPACE, None, False),
            ("watch", "", "configmaps", NAMESPACE, None, False),
            ("get", "", "configmaps", NAMESPACE, "kube-root-ca.crt", False),
            ("list", "", "configmaps", "nim", CONFIGMAP, False),
            ("patch", "", "configmaps", NAMESPACE, CONFIGMAP, False),
            # Its Lease.
            ("get", "coordination.k8s.io", "leases", NAMESPACE, LEASE, True),
            ("update", "coordination.k8s.io", "leases", NAMESPACE, LEASE, True),
            ("create", "coordination.k8s.io", "leases", NAMESPACE, None, True),
            ("update", "coordination.k8s.io", "leases", NAMESPACE, "other", False),
            ("delete", "coordination.k8s.io", "leases", NAMESPACE, LEASE, False),
            ("update", "coordination.k8s.io", "leases", "kube-system", LEASE, False),
            ("create", "coordination.k8s.io", "leases", "kube-system", None, False),
            # Nothing else.
            ("get", "", "secrets", NAMESPACE, "predictive-scaler-tls", False),
            ("list", "", "pods", "nim", None, False),
            ("patch", "apps", "deployments", "nim", "meta-llama3-8b-instruct", False),
        ],
    )
    def test_requests_as_the_api_server_authorizes_them(
        self,
        verb: str,
        group: str,
        resource: str,
        namespace: str | None,
        name: str | None,
        allowed: bool,
    ) -> None:
        """Namespace-aware authorization over :func:`load_rbac_grants`, with the API double's
        own rule matcher (``tests.kube_double.rbac.rules_allow``, which honours the scope of a
        RoleBinding)."""
        resource, _, subresource = resource.partition("/")
        attrs = RequestAttributes(verb, group, resource, subresource, namespace, name)
        scoped = [as_rule(grant) for grant in load_rbac_grants()]
        assert rules_allow(scoped, attrs) is allowed


@pytest.fixture
def kube_rbac_rules() -> list[DoublePolicyRule]:
    """The API double of ``tests/kube_double`` enforces the RBAC shipped in deploy/base, each
    Role's rules in its RoleBinding's namespace only."""
    return [as_rule(grant) for grant in load_rbac_grants()]


class TestRbacOverHttp:
    """Every call of the Kubernetes adapter, through the real client, against the double with
    the rendered rules; and the requests the rules must refuse."""

    async def test_adapter_calls_are_granted(self, kube_server: KubeDouble, kube_api: Any) -> None:
        kube_server.put_object(make_hpa("nim", "meta-llama3-8b-instruct"))
        kube_server.put_object(make_configmap(NAMESPACE, CONFIGMAP, {"config.yaml": "{}"}))
        kube = KubeClient(kube_api)
        snapshot = await kube.read_hpa("nim", "meta-llama3-8b-instruct")
        patched = await kube.patch_hpa_min_replicas(snapshot, 2, {"predictive-scaler.io/x": "1"})
        await kube.create_event(patched, "TooFewReplicas", "minReplicas 1 -> 2", now=utc_now())
        events = kube.watch_configmap(NAMESPACE, CONFIGMAP)
        first = await anext(events)
        assert first.data == {"config.yaml": "{}"}
        await events.aclose()  # type: ignore[attr-defined]
        elector = LeaderElector(kube, NAMESPACE, LEASE, "pod-a")
        assert await elector.try_acquire_or_renew()  # create
        assert await elector.try_acquire_or_renew()  # get + update
        await elector.release()  # get + update
        assert not [r for r in kube_server.requests if not r.allowed]

    async def test_recommend_reads_the_config_map_with_your_own_credentials(
        self, kube_server: KubeDouble, kube_api: Any
    ) -> None:
        """``recommend --config-map`` GETs the ConfigMap; the controller never does, so its
        ServiceAccount may not (run ``recommend`` with your kubeconfig, not in the Pod)."""
        kube_server.put_object(make_configmap(NAMESPACE, CONFIGMAP, {"config.yaml": "{}"}))
        with pytest.raises(KubeApiError) as error:
            await KubeClient(kube_api).read_configmap(NAMESPACE, CONFIGMAP)
        assert error.value.status == 403

    @pytest.mark.parametrize(
        ("namespace", "name"),
        [
            (NAMESPACE, "kube-root-ca.crt"),
            # The Role grants its ConfigMap by name in its own namespace only.
            ("nim", CONFIGMAP),
        ],
    )
    async def test_other_config_maps_are_forbidden(
        self, kube_server: KubeDouble, kube_api: Any, namespace: str, name: str
    ) -> None:
        kube_server.put_object(make_configmap(namespace, name, {"a": "b"}))
        with pytest.raises(KubeApiError) as error:
            await anext(KubeClient(kube_api).watch_configmap(namespace, name))
        assert error.value.status == 403

    @pytest.mark.parametrize(
        ("namespace", "name"),
        [
            (NAMESPACE, "someone-else"),
            # The Role grants its Lease in its own namespace only.
            ("kube-system", LEASE),
        ],
    )
    async def test_other_leases_are_forbidden(
        self, kube_server: KubeDouble, kube_api: Any, namespace: str, name: str
    ) -> None:
        kube = KubeClient(kube_api)
        elector = LeaderElector(kube, namespace, name, "pod-a")
        with pytest.raises(KubeApiError) as error:
            await elector.try_acquire_or_renew()
        assert error.value.status == 403


# ================================================================================ alerts


def _alert_rules(objects: list[Manifest]) -> list[dict[str, Any]]:
    rule = find_object(objects, "PrometheusRule", "predictive-scaler")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    return [item for group in rule["spec"]["groups"] for item in group["rules"]]


class TestPrometheusRule:
    def test_alerts_are_complete(self, base: list[Manifest]) -> None:
        alerts = {item["alert"]: item for item in _alert_rules(base)}
        assert {
            "PredictiveScalerDown",
            "PredictiveScalerConfigInvalid",
            "PredictiveScalerForecastCoverageLow",
            "PredictiveScalerForecastErrorHigh",
            "PredictiveScalerPatchesFailing",
        } <= set(alerts)
        for name, item in alerts.items():
            assert set(item) <= {"alert", "expr", "for", "labels", "annotations"}, name
            assert item["labels"]["severity"] in {"critical", "warning", "info"}, name
            assert {"summary", "description", "runbook_url"} <= set(item["annotations"]), name
            assert re.fullmatch(r"[0-9]+[smh]", item["for"]), name
        assert alerts["PredictiveScalerForecastCoverageLow"]["expr"].endswith(
            "(predictive_scaler_forecast_coverage) < 0.7"
        )
        assert 'result="failed"' in alerts["PredictiveScalerPatchesFailing"]["expr"]

    def test_alerts_use_only_existing_metrics(self, base: list[Manifest]) -> None:
        for item in _alert_rules(base):
            names = promql_metric_names(item["expr"])
            assert names, item["alert"]
            assert names <= KNOWN_METRICS, (item["alert"], names - KNOWN_METRICS)

    @pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
    def test_promtool_accepts_the_rules(self, base: list[Manifest], tmp_path: Path) -> None:
        spec = find_object(base, "PrometheusRule", "predictive-scaler")["spec"]
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        result = subprocess.run(
            ["promtool", "check", "rules", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# ================================================================================ external metrics


class TestExternalMetricsOverlay:
    @pytest.fixture(scope="class")
    @classmethod
    def objects(cls) -> list[Manifest]:
        return render("external-metrics")

    def test_apiservice(self, objects: list[Manifest]) -> None:
        api = find_object(objects, "APIService", "v1beta1.external.metrics.k8s.io")
        spec = api["spec"]
        assert (spec["group"], spec["version"]) == ("external.metrics.k8s.io", "v1beta1")
        assert spec["service"] == {
            "name": "predictive-scaler",
            "namespace": NAMESPACE,
            "port": 6443,
        }
        assert spec.get("insecureSkipTLSVerify") is not True
        service = find_object(objects, "Service", "predictive-scaler")
        https = next(p for p in service["spec"]["ports"] if p["port"] == 6443)
        container_ports = {p["name"]: p["containerPort"] for p in _container(objects)["ports"]}
        assert container_ports[https["targetPort"]] == 6443

    def test_certificate_is_mounted_and_injected(self, objects: list[Manifest]) -> None:
        certificate = find_object(objects, "Certificate", "predictive-scaler-tls")
        issuer = find_object(objects, "Issuer")
        assert certificate["spec"]["issuerRef"] == {
            "kind": "Issuer",
            "name": issuer["metadata"]["name"],
        }
        assert "selfSigned" in issuer["spec"]
        assert f"predictive-scaler.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
        assert "server auth" in certificate["spec"]["usages"]
        secret = certificate["spec"]["secretName"]
        pod = _deployment(objects)["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if "secret" in v)
        assert volume["secret"]["secretName"] == secret
        mount = next(m for m in _container(objects)["volumeMounts"] if m["name"] == volume["name"])
        args = _container(objects)["args"]
        assert f"--tls-cert-file={mount['mountPath']}/tls.crt" in args
        assert f"--tls-key-file={mount['mountPath']}/tls.key" in args
        assert "--external-metrics-port=6443" in args
        api = find_object(objects, "APIService", "v1beta1.external.metrics.k8s.io")
        assert api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{certificate['metadata']['name']}"
        )

    def test_base_serves_no_external_metrics(self, base: list[Manifest]) -> None:
        assert not find_objects(base, "APIService")
        args = _container(base)["args"]
        assert not any(arg.startswith("--external-metrics") for arg in args)


# ================================================================================ adapter, HPA


def _adapter_values() -> dict[str, Any]:
    path = DEPLOY_DIR / "prometheus-adapter" / "values-external-rules.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(values, dict)
    return values


def _example_hpa() -> Manifest:
    documents = list(
        yaml.safe_load_all((DEPLOY_DIR / "examples" / "nim-hpa.yaml").read_text(encoding="utf-8"))
    )
    assert len(documents) == 1
    hpa = documents[0]
    assert isinstance(hpa, dict)
    return hpa


def _rule_metric_name(rule: Mapping[str, Any]) -> str:
    return str(rule["name"]["as"])


_PRESET_TARGETS = """
targets:
  - hpa: {namespace: a, name: b}
    signals: [{preset: nim, name: nim}, {preset: vllm, name: vllm}]
"""


def instant_query(server: PrometheusServer, query: str) -> list[dict[str, Any]]:
    """The result of an instant query on the real server."""
    url = f"{server.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


class TestPrometheusAdapterValues:
    def test_external_rules_serve_the_forecast(self) -> None:
        values = _adapter_values()
        external = {_rule_metric_name(rule): rule for rule in values["rules"]["external"]}
        assert set(external) == {
            "predictive_scaler_forecast_upper",
            "predictive_scaler_recommended_min_replicas",
        }
        for name, rule in external.items():
            assert rule["resources"]["overrides"] == {"target_namespace": {"resource": "namespace"}}
            assert re.fullmatch(rule["name"]["matches"], name)
            assert promql_metric_names(rule["seriesQuery"]) == {name}
            assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"]
        custom = {_rule_metric_name(rule): rule for rule in values["rules"]["custom"]}
        assert set(custom) == {"gpu_cache_usage_perc", "vllm_kv_cache_usage_perc"}
        for rule in custom.values():
            assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        presets = {s.hpa_metric for s in parse_config(_PRESET_TARGETS).targets[0].signals}
        assert presets == set(custom)  # each preset's hpaMetric is served
        assert values["prometheus"]["url"].startswith(
            "http://kube-prometheus-stack-prometheus.monitoring.svc"
        )

    def test_rules_reference_only_existing_metrics(self) -> None:
        rules = _adapter_values()["rules"]
        for rule in rules["external"] + rules["custom"]:
            for key in ("seriesQuery", "metricsQuery"):
                names = promql_metric_names(rule[key])
                assert names <= KNOWN_METRICS, (key, names - KNOWN_METRICS)
            assert _rule_metric_name(rule) in KNOWN_METRICS | ADAPTER_METRICS

    def test_vllm_rule_serves_either_name_from_a_real_prometheus(
        self, prometheus_factory: PrometheusFactory
    ) -> None:
        # Only the newer name, as recent vLLM exports it; and the older one in another
        # namespace. The rule's query, rendered as the adapter renders it for a Pods metric,
        # gives each pod's usage.
        now = time.time()
        ts = np.arange(now - 1800, now - 30, 60.0)
        series: list[Series] = [
            (name, {"namespace": ns, "pod": pod}, ts, np.full(ts.size, level))
            for ns, name in (
                ("new", "vllm:kv_cache_usage_perc"),
                ("old", "vllm:gpu_cache_usage_perc"),
            )
            for pod, level in (("a", 0.25), ("b", 0.75))
        ]
        server = prometheus_factory(series)
        (rule,) = [
            r
            for r in _adapter_values()["rules"]["custom"]
            if _rule_metric_name(r) == "vllm_kv_cache_usage_perc"
        ]
        for ns in ("new", "old"):
            query = (
                rule["metricsQuery"]
                .replace("<<.LabelMatchers>>", f'namespace="{ns}",pod=~"a|b"')
                .replace("<<.GroupBy>>", "pod")
            )
            found = {
                row["metric"]["pod"]: float(row["value"][1]) for row in instant_query(server, query)
            }
            assert found == {"a": 0.25, "b": 0.75}, ns
            discovered = rule["seriesQuery"].replace('namespace!=""', f'namespace="{ns}"')
            names = {r["metric"]["__name__"] for r in instant_query(server, discovered)}
            assert len(names) == 1 and re.fullmatch(rule["name"]["matches"], names.pop()), ns

    async def test_external_rules_map_a_real_scrape_with_or_without_honor_labels(
        self, tmp_path: Path
    ) -> None:
        # The controller's /metrics scraped by a real Prometheus as the Operator does (the
        # scrape adds namespace=<the controller's namespace>), once honouring the exposed labels
        # and once not. The adapter's queries for an HPA in "llm" must find its values either way.
        metrics = ControllerMetrics()
        metrics.publish_target(
            TargetFigures(
                "llm/nim",
                "llm",
                "nim",
                4,
                4,
                1,
                (SignalFigures("kv_cache", True, 600, 0.9, 2.0, 2.6),),
            )
        )
        runner = await start_http_server(make_app(metrics, HealthState()), "127.0.0.1", 0)
        jobs = "".join(
            f"""
  - job_name: {job}
    honor_labels: {honor}
    scrape_interval: 1s
    static_configs:
      - targets: ["127.0.0.1:{bound_port(runner)}"]
        labels: {{namespace: {NAMESPACE}, pod: predictive-scaler-0}}
"""
            for job, honor in (("honoured", "true"), ("plain", "false"))
        )
        server = PrometheusServer(
            tmp_path / "data", config=f"global: {{scrape_interval: 1s}}\nscrape_configs:{jobs}"
        )
        server.start()
        try:
            for rule in _adapter_values()["rules"]["external"]:
                (label,) = [
                    name
                    for name, resource in rule["resources"]["overrides"].items()
                    if resource == {"resource": "namespace"}
                ]
                name = _rule_metric_name(rule)
                selector = 'hpa="nim"' + (
                    ',signal="kv_cache"' if "signal" in rule["metricsQuery"] else ""
                )
                expected = {"predictive_scaler_forecast_upper": 2.6}.get(name, 4.0)
                for job in ("honoured", "plain"):
                    query = (
                        rule["metricsQuery"]
                        .replace("<<.Series>>", name)
                        .replace("<<.LabelMatchers>>", f'{label}="llm",{selector},job="{job}"')
                    )
                    rows: list[dict[str, Any]] = []
                    deadline = time.monotonic() + 20
                    while not rows and time.monotonic() < deadline:
                        rows = instant_query(server, query)
                        if not rows:
                            await asyncio.sleep(0.2)
                    assert [float(r["value"][1]) for r in rows] == [expected], (name, job)
                    assert not instant_query(server, query.replace('="llm"', '="other"'))
        finally:
            server.stop()
            await runner.cleanup()

    def test_external_rules_group_by_labels_the_metrics_have(self) -> None:
        for rule in _adapter_values()["rules"]["external"]:
            grouped = re.search(r"by \(([^)]*)\)", rule["metricsQuery"])
            assert grouped is not None
            labels = {label.strip() for label in grouped.group(1).split(",")}
            assert labels >= {"target_namespace", "hpa"}
            assert labels <= TARGET_LABELS | {"signal"}


class TestExampleHpa:
    def test_validates_strictly(self) -> None:
        kubernetes_validate.validate(_example_hpa(), KUBERNETES_VERSION, strict=True)

    def test_metrics(self) -> None:
        hpa = _example_hpa()
        spec = hpa["spec"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "meta-llama3-8b-instruct",
        }
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        by_type = {metric["type"]: metric for metric in spec["metrics"]}
        pods = by_type["Pods"]["pods"]
        assert pods["metric"]["name"] == "gpu_cache_usage_perc"
        assert pods["target"] == {"type": "AverageValue", "averageValue": "700m"}
        external = by_type["External"]["external"]
        assert external["metric"]["name"] == "predictive_scaler_forecast_upper"
        assert external["metric"]["selector"]["matchLabels"]["hpa"] == hpa["metadata"]["name"]
        assert external["target"]["type"] == "AverageValue"

    def test_metrics_are_served_by_the_adapter(self) -> None:
        rules = _adapter_values()["rules"]
        served = {
            "Pods": {_rule_metric_name(rule) for rule in rules["custom"]},
            "External": {_rule_metric_name(rule) for rule in rules["external"]},
        }
        for metric in _example_hpa()["spec"]["metrics"]:
            body = metric[metric["type"].lower()]
            assert body["metric"]["name"] in served[metric["type"]]

    def test_selector_labels_are_valid_kubernetes_labels(self) -> None:
        """The API server rejects a metric selector whose values are not label values (so the
        target id ``nim/meta-llama3-8b-instruct``, with its ``/``, cannot be selected on)."""
        label_value = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
        for metric in _example_hpa()["spec"]["metrics"]:
            selector = metric[metric["type"].lower()]["metric"].get("selector") or {}
            for key, value in (selector.get("matchLabels") or {}).items():
                assert key in TARGET_LABELS | {"signal"}, key
                assert len(value) <= 63 and label_value.fullmatch(value), value

    def test_behavior(self) -> None:
        behavior = _example_hpa()["spec"]["behavior"]
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
        assert behavior["scaleDown"]["policies"]


# ================================================================================ Grafana


def _dashboard() -> dict[str, Any]:
    path = DEPLOY_DIR / "grafana" / "predictive-scaler-dashboard.json"
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(dashboard, dict)
    return dashboard


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


class TestGrafanaDashboard:
    def test_loads_with_a_target_variable(self) -> None:
        dashboard = _dashboard()
        assert dashboard["uid"] == "predictive-scaler"
        variables = {item["name"]: item for item in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["target"]["type"] == "query"
        assert "target" in variables["target"]["definition"]
        ids = [panel["id"] for panel in _panels(dashboard["panels"])]
        assert len(ids) == len(set(ids))

    def test_every_query_uses_existing_metrics(self) -> None:
        dashboard = _dashboard()
        exprs = [
            target["expr"]
            for panel in _panels(dashboard["panels"])
            for target in panel.get("targets", [])
        ]
        assert len(exprs) >= 10
        for expr in exprs:
            names = promql_metric_names(expr)
            assert names, expr
            assert names <= KNOWN_METRICS, (expr, names - KNOWN_METRICS)
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert match is not None, variable["definition"]
            assert promql_metric_names(match.group(1)) <= KNOWN_METRICS

    def test_covers_demand_forecast_replicas_error_and_health(self) -> None:
        text = json.dumps(_dashboard())
        for needle in (
            "sum(gpu_cache_usage_perc",
            "or vllm:kv_cache_usage_perc",  # vLLM's demand too, under its newer name
            "predictive_scaler_forecast_mean",
            "predictive_scaler_forecast_upper",
            "predictive_scaler_applied_min_replicas",
            "predictive_scaler_recommended_min_replicas",
            "kube_horizontalpodautoscaler_status_current_replicas",
            "predictive_scaler_forecast_abs_error",
            "predictive_scaler_forecast_coverage",
            "predictive_scaler_forecast_peak_coverage",
            "predictive_scaler_is_leader",
            "predictive_scaler_config_valid",
        ):
            assert needle in text, needle

    def test_panels_use_the_datasource_variable(self) -> None:
        for panel in _panels(_dashboard()["panels"]):
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"


def test_promql_metric_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job="x"}[5m]))) '
        "> on (target) group_left 0.5 * max by (target) (b offset 1h) or vector(1e3) "
        '+ c{d="$e"} and label_replace(up, "x", "$1", "y", "(.*)")'
    )
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b", "c", "up"}


# ================================================================================ image


def _stages() -> list[Any]:
    return parse_dockerfile((REPO_ROOT / "Dockerfile").read_text(encoding="utf-8"))


COMPILER_PACKAGES = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6?-dev|gfortran|cmake)\b"
)


class TestDockerfile:
    def test_multi_stage_on_slim_python(self) -> None:
        stages = _stages()
        assert len(stages) >= 2
        for stage in stages:
            assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base
        assert stages[0].name == "builder"

    def test_final_stage_runs_as_numeric_non_root(self) -> None:
        final = _stages()[-1]
        users = final.all("USER")
        assert users, "the final stage sets no USER"
        uid, _, gid = users[-1].partition(":")
        assert uid.isdigit() and int(uid) > 0
        assert not gid or (gid.isdigit() and int(gid) > 0)

    def test_final_stage_has_no_compilers_nor_package_installs(self) -> None:
        final = _stages()[-1]
        for command in final.all("RUN"):
            assert not re.search(r"\b(apt-get|apt|apk|dnf|yum|pip)\b.*\binstall\b", command)
            assert not COMPILER_PACKAGES.search(command), command
        copies = final.all("COPY")
        assert copies and all(copy.startswith("--from=builder") for copy in copies)

    def test_builder_installs_no_compiler_packages_either(self) -> None:
        for command in _stages()[0].all("RUN"):
            assert not COMPILER_PACKAGES.search(command.replace("--no-cache-dir", "")), command

    def test_entrypoint_and_environment(self) -> None:
        final = _stages()[-1]
        (entrypoint,) = final.all("ENTRYPOINT")
        assert json.loads(entrypoint) == ["predictive-scaler"]
        (cmd,) = final.all("CMD")
        assert json.loads(cmd) == ["run", "--config-map", f"{NAMESPACE}/{CONFIGMAP}"]
        env = " ".join(final.all("ENV"))
        assert "PYTHONDONTWRITEBYTECODE=1" in env
        assert re.search(r"MPLCONFIGDIR=/tmp\b", env)
        assert "/opt/venv/bin" in env
        builder_env = " ".join(_stages()[0].all("ENV"))
        assert "PIP_NO_CACHE_DIR=1" in builder_env

    def test_copied_sources_are_in_the_build_context(self) -> None:
        patterns = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        builder = _stages()[0]
        for copy in builder.all("COPY"):
            *sources, _ = copy.split()
            for pattern in sources:
                source = pattern.rstrip("*").rstrip("/")
                if source == "README.md":
                    continue  # optional (COPY README.md* may match nothing)
                assert (REPO_ROOT / source).exists(), source
                assert dockerignore_includes(patterns, source), source
        for path in ("predictive_scaler/config/loader.py", "models/base.py", "pyproject.toml"):
            assert dockerignore_includes(patterns, path), path
        for path in (
            "tests/test_deploy.py",
            ".git/config",
            "deploy/base/deployment.yaml",
            "predictive_scaler/__pycache__/config.cpython-311.pyc",
            "predictive_scaler.egg-info/PKG-INFO",
        ):
            assert not dockerignore_includes(patterns, path), path


# ================================================================================ docs


@pytest.mark.parametrize("page", ["quickstart.md", "operations.md"])
def test_docs_refer_to_files_that_exist(page: str) -> None:
    text = (REPO_ROOT / "docs" / page).read_text(encoding="utf-8")
    paths = set(re.findall(r"\bdeploy/[\w./-]*[\w/]", text))
    assert paths, page
    for path in paths:
        assert (REPO_ROOT / path).exists(), path


# ============================================================================ moving the install
#
# A platform team installs into its own namespace, often with a name prefix, from a kustomization
# of its own on top of an overlay (docs/quickstart.md, step 4). kustomize's `namespace:` and
# `namePrefix:` rename the objects and the references kustomize knows; every other place that
# names the namespace or an object (inside strings, in CRD fields) is carried by the
# ReplacementTransformers in deploy/portable, listed under `transformers:` so they run after
# the move.

MOVED_NAMESPACE = "ps-moved"
MOVED_PREFIX = "acme-"
#: Names of objects in the unmoved install (the namespace and the product share the first).
OLD_NAMES = {
    NAMESPACE,
    CONFIGMAP,
    "predictive-scaler-tls",
    "predictive-scaler-selfsigned",
}
#: Places where "predictive-scaler" names the product, not the namespace or an object.
PRODUCT_NAME_USES = (
    re.compile(r"predictive-scaler\.io/"),  # the annotation domain
    re.compile(r"/etc/predictive-scaler/"),  # a path inside the container
    re.compile(r"predictive-scaler (?:validate-config|recommend|status|backtest|run)\b"),  # CLI
    # The project's repository (the alerts' runbook_url).
    re.compile(r"https://github\.com/predictive-scaler/predictive-scaler/"),
)
_TOKEN_SPLIT = re.compile(r"[\s/.\"'=,:;{}()\[\]`<>|$]+")
_CODE_SPAN = re.compile(r"`([^`]*)`")


def _relative(path: Path, start: Path) -> str:
    # kubectl kustomize refuses absolute resource paths; a relative one from the temp dir works.
    return str(Path(os.path.relpath(path, start)))


def _write_kustomization(directory: Path, fields: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(body), encoding="utf-8")
    return directory


def _moved(overlay: str, tmp_path: Path, *, prefix: str = MOVED_PREFIX) -> Path:
    """A user's kustomization: the overlay moved into MOVED_NAMESPACE with a name prefix."""
    directory = tmp_path / f"moved-{overlay}"
    return _write_kustomization(
        directory,
        {
            "namespace": MOVED_NAMESPACE,
            **({"namePrefix": prefix} if prefix else {}),
            "resources": [_relative(KUSTOMIZATIONS[overlay], directory)],
            "transformers": [_relative(PORTABLE[overlay], directory)],
        },
    )


def _strings(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*path, str(index)))
    elif isinstance(node, str):
        yield path, node


def _is_label_map(path: tuple[str, ...]) -> bool:
    # app.kubernetes.io/name=predictive-scaler is the application, kept across installs.
    return "labels" in path[:-1] or "matchLabels" in path[:-1] or path[-2:-1] == ("selector",)


def _leftovers(objects: list[Manifest]) -> list[str]:
    """Every place that still names the old namespace or an old object name.

    Checked: every string of every object (and of the configuration inside the ConfigMap),
    split into tokens at the characters kustomize replacements and PromQL delimit with; a token
    equal to an old name is a leftover. Not checked: label values (the application's name),
    container images, and product-name uses (PRODUCT_NAME_USES). In alert prose, where
    "predictive-scaler" also names the product, the bare product name counts only inside code
    spans (the commands a reader copies); the other old names count everywhere.

    One name is not the manifests' to move: the leader-election Lease, which the controller
    creates under ``controller.leaseName`` and the Role names in its ``leases`` rule. A Lease
    lives in the install's namespace, so installs in different namespaces never share one;
    ``test_rbac_follows_the_move`` checks the two stay equal.
    """
    found: list[str] = []
    for obj in objects:
        where = "/".join(object_key(obj)[1:])
        leaves = list(_strings(obj))
        if obj["kind"] == "ConfigMap":
            for key, text in (obj.get("data") or {}).items():
                inside = _strings(yaml.safe_load(text))
                leaves.extend((("data", key, *inner), value) for inner, value in inside)
        for path, value in leaves:
            raw_configuration = obj["kind"] == "ConfigMap" and len(path) == 2
            if _is_label_map(path) or path[-1] == "image" or raw_configuration:
                continue
            if path[-2:] == ("controller", "leaseName") or _is_lease_rule(obj, path):
                continue
            text = value
            for use in PRODUCT_NAME_USES:
                text = use.sub(" ", text)
            prose = path[-1] in {"summary", "description"}
            names = OLD_NAMES - {NAMESPACE} if prose else OLD_NAMES
            tokens = set(_TOKEN_SPLIT.split(text))
            if prose:
                for span in _CODE_SPAN.findall(text):
                    tokens_in_code = set(_TOKEN_SPLIT.split(span))
                    if NAMESPACE in tokens_in_code:
                        found.append(f"{where} {'.'.join(path)}: {value!r}")
            if tokens & names:
                found.append(f"{where} {'.'.join(path)}: {value!r}")
    return sorted(set(found))


def _is_lease_rule(obj: Manifest, path: tuple[str, ...]) -> bool:
    if obj["kind"] != "Role" or path[0] != "rules" or "resourceNames" not in path:
        return False
    return bool(obj["rules"][int(path[1])].get("resources") == ["leases"])


class TestMovedInstall:
    @pytest.fixture(scope="class")
    @classmethod
    def moved(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
        root = tmp_path_factory.mktemp("moved")
        return {overlay: render(str(_moved(overlay, root))) for overlay in OVERLAYS}

    def test_no_leftover_of_the_old_namespace_or_names(
        self, moved: dict[str, list[Manifest]], overlay: str
    ) -> None:
        leftovers = _leftovers(moved[overlay])
        assert leftovers == [], "\n".join(leftovers)

    def test_the_unmoved_install_is_found_by_the_scan(self, rendered: list[Manifest]) -> None:
        # The scan itself can fail: on the install as shipped it finds the namespace and names.
        leftovers = _leftovers(rendered)
        assert any("ServiceMonitor" in item for item in leftovers), leftovers
        assert any("PrometheusRule" in item for item in leftovers), leftovers

    def test_every_reference_follows_the_move(self, moved: dict[str, list[Manifest]]) -> None:
        objects = moved["external-metrics"]
        prefixed = f"{MOVED_PREFIX}predictive-scaler"
        service = find_object(objects, "Service", prefixed)
        assert service["metadata"]["namespace"] == MOVED_NAMESPACE
        monitor = find_object(objects, "ServiceMonitor", prefixed)
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [MOVED_NAMESPACE]
        down = {item["alert"]: item for item in _alert_rules_named(objects, prefixed)}[
            "PredictiveScalerDown"
        ]
        # Prometheus Operator names the job after the Service.
        assert f'job="{prefixed}"' in down["expr"], down["expr"]
        assert f'namespace="{MOVED_NAMESPACE}"' in down["expr"], down["expr"]
        certificate = find_object(objects, "Certificate", f"{prefixed}-tls")
        host = f"{prefixed}.{MOVED_NAMESPACE}.svc"
        assert certificate["spec"]["commonName"] == host
        assert certificate["spec"]["dnsNames"] == [host, f"{host}.cluster.local"]
        assert certificate["spec"]["issuerRef"]["name"] == f"{prefixed}-selfsigned"
        find_object(objects, "Issuer", f"{prefixed}-selfsigned")
        secret = certificate["spec"]["secretName"]
        apiservice = find_object(objects, "APIService", "v1beta1.external.metrics.k8s.io")
        assert apiservice["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{MOVED_NAMESPACE}/{prefixed}-tls"
        )
        assert apiservice["spec"]["service"] == {
            "name": prefixed,
            "namespace": MOVED_NAMESPACE,
            "port": 6443,
        }
        deployment = find_object(objects, "Deployment", prefixed)
        pod = deployment["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == secret
        assert secret.startswith(MOVED_PREFIX)
        args = pod["containers"][0]["args"]
        configmap = f"{MOVED_PREFIX}{CONFIGMAP}"
        assert args[args.index("--config-map") + 1] == f"$(POD_NAMESPACE)/{configmap}"
        find_object(objects, "ConfigMap", configmap)
        assert pod["serviceAccountName"] == prefixed

    def test_rbac_follows_the_move(self, moved: dict[str, list[Manifest]], overlay: str) -> None:
        objects = moved[overlay]
        account = (MOVED_NAMESPACE, f"{MOVED_PREFIX}predictive-scaler")
        grants = load_rbac_grants(service_account=account, objects=objects)
        configmap = f"{MOVED_PREFIX}{CONFIGMAP}"
        # The Lease is not a manifest: the controller creates it under controller.leaseName,
        # which the Role names too; both keep "predictive-scaler" (a Lease lives in its
        # namespace, so installs in different namespaces never share one).
        lease = yaml.safe_load(_config_text_named(objects, configmap))["controller"]["leaseName"]
        expected = {
            (
                MOVED_NAMESPACE if scope == NAMESPACE else scope,
                group,
                resource,
                verb,
                tuple(
                    configmap if name == CONFIGMAP else lease if name == LEASE else name
                    for name in names
                ),
            )
            for scope, group, resource, verb, names in expected_rbac(overlay)
        }
        assert _expanded(grants) == expected
        hpa = load_rbac_grants(service_account=HPA_SERVICE_ACCOUNT, objects=objects)
        assert _expanded(hpa) == (
            HPA_EXTERNAL_METRICS_RBAC if overlay == "external-metrics" else set()
        )

    @pytest.mark.skipif(not HAS_KUBECTL, reason="kubectl is not installed")
    def test_python_renderer_agrees_with_kubectl(self, overlay: str, tmp_path: Path) -> None:
        for prefix in ("", MOVED_PREFIX):
            directory = _moved(overlay, tmp_path / (prefix or "plain"), prefix=prefix)
            by_kubectl = {object_key(obj): obj for obj in render_with_kubectl(directory)}
            by_python = {object_key(obj): obj for obj in render_with_python(directory)}
            assert sorted(by_python) == sorted(by_kubectl)
            for key, obj in by_kubectl.items():
                assert by_python[key] == obj, key

    def test_dashboard_names_no_namespace_or_job_of_its_own(self) -> None:
        text = json.dumps(_dashboard())
        assert not re.findall(r'(?:namespace|job)=~?\\"predictive-scaler\\"', text)


def _alert_rules_named(objects: list[Manifest], name: str) -> list[dict[str, Any]]:
    rule = find_object(objects, "PrometheusRule", name)
    return [item for group in rule["spec"]["groups"] for item in group["rules"]]


def _config_text_named(objects: list[Manifest], name: str) -> str:
    return str(find_object(objects, "ConfigMap", name)["data"]["config.yaml"])


# ============================================================================ quick start
#
# docs/quickstart.md must work as written from a clean clone: the image exists before anything
# pulls it (the image in deploy/base is an unpublished placeholder), the kustomization it has
# you write renders and runs the image you built, the dry-run step changes nothing (no HPA that
# consumes the forecast is applied before the go-live step) and the go-live step turns it on.

QUICKSTART = REPO_ROOT / "docs" / "quickstart.md"
_HEREDOC = re.compile(r"cat > (\S+/kustomization\.yaml) <<'?EOF'?\n(.*?)\nEOF\n", re.DOTALL)
_SED = re.compile(r"sed -i 's#([^#]+)#([^#]+)#' (\S+)")
#: Commands that apply an HPA which scales on predictive_scaler_forecast_upper.
_FORECAST_HPA = re.compile(r"kubectl apply -f deploy/examples/nim-hpa\.yaml")


def _sections(markdown: str) -> dict[str, str]:
    """``{"4": "<text of section 4>", ...}`` for the numbered ``## N. Title`` sections."""
    parts = re.split(r"^## (\d+)\. .*$", markdown, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _quickstart_kustomization(text: str, directory: Path) -> Path:
    """The kustomization a step writes, with its ``../deploy/`` paths made to resolve from a
    temporary directory as they do from the clone's root."""
    match = _HEREDOC.search(text)
    assert match is not None, "no `cat > .../kustomization.yaml <<EOF` in the step"
    body = match.group(2).replace("../deploy/", f"{_relative(DEPLOY_DIR, directory)}/")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(body + "\n", encoding="utf-8")
    return directory


def _built_image(markdown: str) -> str:
    match = re.search(r"docker build -t (\S+) \.", markdown)
    assert match is not None, "the quick start builds no image"
    return match.group(1)


class TestQuickStart:
    def test_the_image_step_comes_before_the_first_apply(self) -> None:
        text = QUICKSTART.read_text(encoding="utf-8")
        first_apply = text.index("kubectl apply -k")
        image = _built_image(text)
        assert text.index(f"docker push {image}") < first_apply
        assert "kind load docker-image" in text[:first_apply]  # the kind cluster's way

    def test_no_page_applies_an_overlay_with_the_placeholder_image(self) -> None:
        # `kubectl apply -k deploy/...` runs the unpublished placeholder image: ImagePullBackOff.
        pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
        pages += sorted(DEPLOY_DIR.rglob("kustomization.yaml"))
        for page in pages:
            text = page.read_text(encoding="utf-8")
            assert "kubectl apply -k deploy/" not in text, page.relative_to(REPO_ROOT)

    def test_dry_run_step_renders_the_built_image_and_changes_nothing(self, tmp_path: Path) -> None:
        text = QUICKSTART.read_text(encoding="utf-8")
        step = _sections(text)["4"]
        assert "dry run" in step.lower()
        objects = render(str(_quickstart_kustomization(step, tmp_path / "my-predictive-scaler")))
        container = _container(objects)
        assert container["image"] == _built_image(text)
        assert "--dry-run" in container["args"]
        assert not find_objects(objects, "HorizontalPodAutoscaler")
        # Nothing up to the go-live step applies an HPA that scales on the forecast.
        for number in ("0", "1", "2", "3", "4", "5"):
            assert not _FORECAST_HPA.search(_sections(text).get(number, "")), number

    def test_go_live_step_turns_it_on_and_brings_the_forecast_hpa(self, tmp_path: Path) -> None:
        text = QUICKSTART.read_text(encoding="utf-8")
        sections = _sections(text)
        directory = _quickstart_kustomization(sections["4"], tmp_path / "my-predictive-scaler")
        live = sections["6"]
        match = _SED.search(live)
        assert match is not None and match.group(3) == "my-predictive-scaler/kustomization.yaml"
        old, new = match.group(1), match.group(2)
        body = (directory / "kustomization.yaml").read_text(encoding="utf-8")
        rewritten = body.replace(
            old.replace("../deploy/", f"{_relative(DEPLOY_DIR, directory)}/"),
            new.replace("../deploy/", f"{_relative(DEPLOY_DIR, directory)}/"),
        )
        assert rewritten != body, "the step's sed changes nothing"
        (directory / "kustomization.yaml").write_text(rewritten, encoding="utf-8")
        container = _container(render(str(directory)))
        assert "--dry-run" not in container["args"]
        assert container["image"] == _built_image(text)
        hpa = _FORECAST_HPA.search(live)
        assert hpa is not None, "the go-live step does not bring the forecast HPA"
        # Turned on first, then the HPA that scales on the forecast.
        assert live.index("kubectl apply -k my-predictive-scaler") < hpa.start()

    def test_example_hpa_is_not_offered_for_the_dry_run(self) -> None:
        header = (DEPLOY_DIR / "examples" / "nim-hpa.yaml").read_text(encoding="utf-8")
        assert "changes nothing" not in header

    @pytest.mark.skipif(not HAS_KUBECTL, reason="kubectl is not installed")
    def test_python_renderer_agrees_with_kubectl(self, tmp_path: Path) -> None:
        # The step's `images:`, rendered by both (CI has no kubectl: the Python one must agree).
        step = _sections(QUICKSTART.read_text(encoding="utf-8"))["4"]
        directory = _quickstart_kustomization(step, tmp_path / "my-predictive-scaler")
        by_kubectl = {object_key(obj): obj for obj in render_with_kubectl(directory)}
        by_python = {object_key(obj): obj for obj in render_with_python(directory)}
        assert by_python == by_kubectl
