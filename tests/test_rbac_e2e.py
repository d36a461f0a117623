"""The RBAC in deploy/ is enough, and nothing in it is unused: the controller's whole lifecycle
against an API double that grants exactly what deploy/base binds to its ServiceAccount.

The process is ``run_controller`` with the base Deployment's own arguments and the base
ConfigMap's own configuration (the documented NIM example), the example HPA of
``deploy/examples/nim-hpa.yaml``, and a real Prometheus with four days of NIM-like KV-cache
usage behind it. Time is virtual: every sleep of the controller waits for the test to move
the clock, so each step runs to completion before the next (no real sleeping, no racing).

Lifecycle covered: startup and the config watch (list + watch of its ConfigMap by name), the
HPA informer (list + watch of all HPAs; a GET while its watch is broken),
leader election (create the Lease, renew it), cycles that raise ``minReplicas`` (get + merge
patch of the HPA, an Event on it), a bad ConfigMap (Warning Event on the ConfigMap), a target
removed (its base restored) and added back, and SIGTERM-like stop with ``--restore-on-exit``
(base restored) and the Lease released.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from predictive_scaler.cli import build_parser
from predictive_scaler.kube import ANNOTATION_BASE_MIN_REPLICAS
from predictive_scaler.runtime import Controller
from tests.deploy_support import (
    DEPLOY_DIR,
    SERVICE_ACCOUNT,
    find_object,
    load_rbac_grants,
    render,
)
from tests.kube_double import DEFAULT_USER, KubeDouble, make_deployment
from tests.kube_double.rbac import PolicyRule, as_rule
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer, Series
from tests.support import eventually, run_options, running_controller

NAMESPACE, SERVICE_ACCOUNT_NAME = SERVICE_ACCOUNT
CONFIGMAP = "predictive-scaler-config"
LEASE = "predictive-scaler"
HPA_NAMESPACE, HPA_NAME = "nim", "meta-llama3-8b-instruct"
STEP = 60.0
DAYS = 4
PODS = 4
DEMAND = 2.4
"""Pods' worth of KV cache in use (sum over the pods): 4 pods at 0.7 of the HPA's 700m
target, so ``minReplicas`` 1 is too low."""
DATA_END = math.floor(time.time() / STEP) * STEP - STEP
START = DATA_END - 3600.0
"""The controller's clock starts an hour before the data ends (the run stays inside it)."""
RUN_IDENTITY = "predictive-scaler-7d9f-abcde"


@pytest.fixture
def kube_rbac_rules() -> list[PolicyRule]:
    """Exactly the grants deploy/base binds to the ServiceAccount, each Role's in its
    namespace (the double's default token is the ServiceAccount's)."""
    assert f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT_NAME}" == DEFAULT_USER
    return [as_rule(grant) for grant in load_rbac_grants("base")]


def nim_series() -> list[Series]:
    timestamps = DATA_END - STEP * np.arange(DAYS * 86400 / STEP, -1, -1)
    rng = np.random.default_rng(5)
    series: list[Series] = []
    for i in range(PODS):
        # The pods' own label, as Prometheus' discovery maps it onto their series.
        labels = {
            "namespace": HPA_NAMESPACE,
            "service": HPA_NAME,
            "pod": f"{HPA_NAME}-{i}",
            "app_kubernetes_io_name": HPA_NAME,
        }
        usage = np.round(DEMAND / PODS + rng.normal(0, 0.004, timestamps.size), 6)
        series.append(("gpu_cache_usage_perc", labels, timestamps, usage))
        series.append(("num_requests_running", labels, timestamps, np.full(timestamps.size, 24.0)))
        series.append(("num_requests_waiting", labels, timestamps, np.zeros(timestamps.size)))
    return series


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(nim_series())


class VirtualTime:
    """A clock and a sleeper: a sleep returns once the test moved the clock past its end."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._sleeping: list[tuple[datetime, asyncio.Future[None]]] = []

    def __call__(self) -> datetime:
        return self.now

    @property
    def sleeping(self) -> int:
        return len(self._sleeping)

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + timedelta(seconds=seconds), future)
        self._sleeping.append(entry)
        try:
            await future
        finally:
            if entry in self._sleeping:
                self._sleeping.remove(entry)

    def wake_next(self) -> None:
        """Move to the earliest wake-up time and wake every sleeper due then."""
        self.now = max(self.now, min(when for when, _ in self._sleeping))
        for entry in [e for e in self._sleeping if e[0] <= self.now]:
            self._sleeping.remove(entry)
            entry[1].set_result(None)


class Run:
    """Drives a started controller through virtual time."""

    def __init__(self, clock: VirtualTime, controller: Controller, tasks: int) -> None:
        self.clock = clock
        self.controller = controller
        self.tasks = tasks
        """Tasks that sleep between steps: the main loop and the Lease renewal."""

    async def settle(self) -> None:
        # The loop sleeps while its cycles run beside it: a step ends when they are done too.
        await eventually(
            lambda: self.clock.sleeping >= self.tasks and not self.controller.dispatcher.busy()
        )

    async def until(self, predicate: Callable[[], bool], max_seconds: float = 600.0) -> None:
        """Step through virtual time (each step runs to its next sleep) until ``predicate``."""
        deadline = self.clock.now + timedelta(seconds=max_seconds)
        await self.settle()
        while not predicate():
            assert self.clock.now < deadline, "not reached in virtual time"
            self.clock.wake_next()
            await self.settle()


def deployment_args() -> tuple[list[str], dict[str, str]]:
    """The base Deployment's container args (``$(VAR)`` expanded as the kubelet does) and
    the env of its Pod (Downward API values of one Pod)."""
    deployment = find_object(render("base"), "Deployment", "predictive-scaler")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    fields = {"metadata.name": RUN_IDENTITY, "metadata.namespace": NAMESPACE}
    limits = container["resources"]["limits"]
    env = {
        e["name"]: (
            fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            if "fieldRef" in e["valueFrom"]
            # resourceFieldRef limits.cpu, divisor 1: the kubelet rounds up to whole CPUs.
            else str(limits[e["valueFrom"]["resourceFieldRef"]["resource"].split(".")[1]])
        )
        for e in container["env"]
    }
    args = [str(arg) for arg in container["args"]]
    for name, value in env.items():
        args = [arg.replace(f"$({name})", value) for arg in args]
    return args, env


def base_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    configmap = find_object(render("base"), "ConfigMap", CONFIGMAP)
    hpa = yaml.safe_load((DEPLOY_DIR / "examples" / "nim-hpa.yaml").read_text())
    hpa["status"] = {"currentReplicas": 1, "desiredReplicas": 1}
    return dict(configmap), hpa


def with_config(configmap: dict[str, Any], text: str) -> dict[str, Any]:
    changed = {**configmap, "data": {**configmap["data"], "config.yaml": text}}
    changed["metadata"] = {k: v for k, v in configmap["metadata"].items() if k != "resourceVersion"}
    return changed


async def test_the_deployed_rbac_is_exactly_enough(
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configmap, hpa = base_objects()
    good_config = configmap["data"]["config.yaml"]
    kube_server.put_object(configmap)
    kube_server.put_object(hpa)
    # The example HPA's scale target: its pods are found through deployments/scale.
    kube_server.put_object(
        make_deployment(HPA_NAMESPACE, HPA_NAME, {"app.kubernetes.io/name": HPA_NAME}, replicas=4)
    )

    def min_replicas() -> int:
        stored = kube_server.get_object(
            "autoscaling/v2", "HorizontalPodAutoscaler", HPA_NAMESPACE, HPA_NAME
        )
        assert stored is not None
        return int(stored["spec"]["minReplicas"])

    def events(namespace: str) -> list[dict[str, Any]]:
        return list(kube_server.list_events(namespace))

    # The Deployment's own command line, run out of cluster with the ServiceAccount's token.
    args, env = deployment_args()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert args[0] == "run"
    parsed = build_parser().parse_args([*args, "--restore-on-exit"])
    assert parsed.config_map == f"{NAMESPACE}/{CONFIGMAP}" and not parsed.dry_run
    options = run_options(
        kube_server,
        prometheus.url,  # the ConfigMap names the in-cluster Service
        tmp_path,
        monkeypatch,
        config_map=parsed.config_map,
        identity=None,
        restore_on_exit=parsed.restore_on_exit,
        log_format=parsed.log_format,
    )
    clock = VirtualTime(datetime.fromtimestamp(START, UTC))
    async with running_controller(options, clock=clock, sleeper=clock.sleep) as running:
        controller = running.controller
        assert controller.elector is not None and controller.elector.is_leader
        assert controller.elector.identity == RUN_IDENTITY
        run = Run(clock, controller, tasks=2)

        # Cycles raise minReplicas, with an Event on the HPA each time; the Lease is renewed.
        await run.until(lambda: min_replicas() > 1)
        await run.until(lambda: clock.now >= datetime.fromtimestamp(START + 120, UTC))
        assert min_replicas() > 1
        raises = events(HPA_NAMESPACE)
        assert raises and all(
            e["involvedObject"]["kind"] == "HorizontalPodAutoscaler" for e in raises
        )
        lease = kube_server.get_object("coordination.k8s.io/v1", "Lease", NAMESPACE, LEASE)
        assert lease is not None and lease["spec"]["holderIdentity"] == RUN_IDENTITY
        renewals = [r for r in kube_server.requests if r.method == "PUT" and "/leases/" in r.path]
        assert len(renewals) >= 120 / controller.elector.renew_period_seconds - 1

        # HPAs come from the informer (list + watch of all namespaces), so far without a GET.
        # Its watch is cut and the API refuses the re-list for a while: the cache is not
        # trusted meanwhile and the cycles read their HPA by name (get), then it syncs again.
        def hpa_gets() -> int:
            return sum(
                1
                for r in kube_server.requests
                if r.method == "GET" and r.path.endswith(f"/horizontalpodautoscalers/{HPA_NAME}")
            )

        assert controller.hpa_informer is not None and controller.hpa_informer.synced
        gets = hpa_gets()
        kube_server.fail_next("GET", r"/apis/autoscaling/v2/horizontalpodautoscalers$", 503, 8)
        kube_server.drop_watches()
        await run.until(lambda: hpa_gets() > gets)
        await run.until(
            lambda: controller.hpa_informer is not None and controller.hpa_informer.synced
        )

        # A bad ConfigMap: a Warning Event on it; the last good configuration stays.
        good = controller.config
        bad = good_config.replace("scaleUpStep: 2", "scaleUpStep: 0")
        assert bad != good_config
        kube_server.put_object(with_config(configmap, bad))
        await eventually(lambda: bool(events(NAMESPACE)))
        [rejected] = events(NAMESPACE)
        assert (rejected["type"], rejected["reason"]) == ("Warning", "ConfigRejected")
        assert rejected["involvedObject"]["name"] == CONFIGMAP
        assert "scaleUpStep" in rejected["message"]
        assert controller.config is good

        # The target removed: its base comes back.
        without = yaml.safe_dump({**yaml.safe_load(good_config), "targets": []})
        kube_server.put_object(with_config(configmap, without))
        await eventually(lambda: controller.config is not good)
        await run.until(lambda: min_replicas() == 1)

        # ...and added back without its selector: its pods are then found as the HPA finds
        # them, through the scale target (deployments/scale); raised again.
        selectorless = re.sub(r"\n *selector: \{[^}]*\}[^\n]*", "", good_config)
        assert selectorless != good_config
        kube_server.put_object(with_config(configmap, selectorless))
        await eventually(lambda: len(controller.reconcilers) == 1)
        await run.until(lambda: min_replicas() > 1)
        (back,) = controller.reconcilers.values()
        assert back.pods_selector == f"app.kubernetes.io/name={HPA_NAME}"

        # Stop (SIGTERM sets the same flag): restore on exit, release the Lease.
        await run.settle()
        assert await running.stop(30) == 0

    assert min_replicas() == 1
    stored = kube_server.get_object(
        "autoscaling/v2", "HorizontalPodAutoscaler", HPA_NAMESPACE, HPA_NAME
    )
    assert stored is not None
    assert ANNOTATION_BASE_MIN_REPLICAS not in (stored["metadata"].get("annotations") or {})
    lease = kube_server.get_object("coordination.k8s.io/v1", "Lease", NAMESPACE, LEASE)
    assert lease is not None and not lease["spec"].get("holderIdentity")

    # Enough: nothing the controller asked for was refused (nor failed, but the first read of
    # the Lease, which does not exist yet and is then created, and the 503s injected above).
    injected = ("GET", "/apis/autoscaling/v2/horizontalpodautoscalers", 503)
    requests = [
        r for r in kube_server.requests if (r.method, r.path, r.status) != injected or r.allowed
    ]
    assert len(requests) == len(kube_server.requests) - 8
    assert [(r.method, r.path, r.status) for r in requests if not r.allowed] == []
    assert {
        (r.method, r.attributes.resource if r.attributes else r.path, r.status)
        for r in requests
        if r.status is not None and r.status >= 400
    } == {("GET", "leases", 404)}
    # Nothing unused: every (apiGroup, resource, verb) granted was exercised, in the scope that
    # grants it.
    assert kube_server.unused_permissions() == set()
    granted = {
        (group, resource, verb)
        for grant in load_rbac_grants("base")
        for group in grant.rule["apiGroups"]
        for resource in grant.rule["resources"]
        for verb in grant.rule["verbs"]
    }
    assert set(kube_server.used_permissions()) == granted
