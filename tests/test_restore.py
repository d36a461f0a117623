"""Every base given back: a managed HPA (one that carries our annotations) with no enabled
target gets its base minReplicas back and our annotations removed, at start and on every
reload, whatever the target was (live, dry-run, or gone while no controller ran); a failed
restore is retried with backoff until it succeeds or the HPA is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_REASON,
    KubeClient,
)
from predictive_scaler.reconcile import MANAGED_ANNOTATIONS
from predictive_scaler.runtime import Controller
from tests.chaos import PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_hpa
from tests.support import FakeClock
from tests.test_faults_kube import CONFIG, HPA_PATH, NO_TARGETS, NS, flat_demand, inline

START = datetime(2025, 3, 3, 12, 0, 30, tzinfo=UTC)
DRY = CONFIG.replace(
    "  - hpa: {namespace: busy, name: nim}\n",
    "  - hpa: {namespace: busy, name: nim}\n    dryRun: true\n",
)
assert DRY != CONFIG


@pytest.fixture
async def prometheus() -> AsyncIterator[PrometheusFaultProxy]:
    async with PrometheusFaultProxy(series=flat_demand) as fake:
        yield fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def _controller(kube_api: client.ApiClient, url: str, clock: FakeClock) -> Controller:
    return Controller(KubeClient(kube_api), prometheus_url=url, clock=clock, fit_runner=inline)


def _hpa(server: KubeDouble) -> tuple[int, dict[str, str]]:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "nim")
    assert stored is not None
    return stored["spec"]["minReplicas"], dict(stored["metadata"].get("annotations") or {})


def _ours(annotations: dict[str, str]) -> set[str]:
    return set(MANAGED_ANNOTATIONS) & set(annotations)


RAISED = {
    ANNOTATION_BASE_MIN_REPLICAS: "2",
    ANNOTATION_APPLIED_MIN_REPLICAS: "5",
    ANNOTATION_REASON: "ForecastRaise: a previous run raised it",
}


async def test_a_target_removed_while_no_controller_ran_gets_its_base_back_at_start(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
) -> None:
    # A previous run raised minReplicas 2 -> 5; the rollout removed the target and restarted
    # the pods together, so no controller ever saw the target go.
    kube_server.put_object(make_hpa(NS, "nim", 5, 10, annotations=dict(RAISED)))
    kube_server.put_object(make_hpa(NS, "unmanaged", 4, 10))
    controller = _controller(kube_api, prometheus.url, clock)
    try:
        controller.apply_config(parse_config(NO_TARGETS))
        await controller.run_due()
        minimum, annotations = _hpa(kube_server)
        assert (minimum, _ours(annotations)) == (2, set()), (minimum, annotations)
        other = kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "unmanaged")
        assert other is not None and other["spec"]["minReplicas"] == 4  # never ours: untouched
    finally:
        await controller.aclose()


async def test_a_target_set_to_dry_run_then_removed_gets_its_base_back(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    controller = _controller(kube_api, prometheus.url, clock)
    try:
        controller.apply_config(parse_config(CONFIG))
        [report] = await controller.run_due()
        assert report.applied == 3  # raised live
        controller.apply_config(parse_config(DRY))
        clock.advance(300)
        [dry] = await controller.run_due()
        assert dry.patch_result in {None, "dry_run"}
        controller.apply_config(parse_config(NO_TARGETS))
        await controller.run_due()
        minimum, annotations = _hpa(kube_server)
        assert (minimum, _ours(annotations)) == (1, set()), (minimum, annotations)
    finally:
        await controller.aclose()


async def test_a_failed_restore_is_retried_with_backoff_and_survives_a_restart(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    first = _controller(kube_api, prometheus.url, clock)
    try:
        first.apply_config(parse_config(CONFIG))
        [report] = await first.run_due()
        assert report.applied == 3
        kube_server.fail_next("PATCH", HPA_PATH, 503, times=1)
        first.apply_config(parse_config(NO_TARGETS))
        await first.run_due()
        assert _hpa(kube_server)[0] == 3  # the restore failed
        patches = sum(1 for r in kube_server.requests if r.method == "PATCH")
        await first.run_due()  # at once: still backing off, no new attempt
        assert sum(1 for r in kube_server.requests if r.method == "PATCH") == patches, (
            "retried before its backoff"
        )
    finally:
        await first.aclose()

    # The controller restarts before the retry: the next one finds the HPA by its annotations.
    clock.advance(1)
    second = _controller(kube_api, prometheus.url, clock)
    try:
        second.apply_config(parse_config(NO_TARGETS))
        await second.run_due()
        minimum, annotations = _hpa(kube_server)
        assert (minimum, _ours(annotations)) == (1, set()), (minimum, annotations)
    finally:
        await second.aclose()


async def test_a_failed_restore_is_retried_until_it_succeeds(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 5, 10, annotations=dict(RAISED)))
    kube_server.fail_next("PATCH", HPA_PATH, 503, times=3)
    controller = _controller(kube_api, prometheus.url, clock)
    try:
        controller.apply_config(parse_config(NO_TARGETS))
        for _ in range(10):
            await controller.run_due()
            if _hpa(kube_server)[0] == 2:
                break
            clock.advance(120)
        minimum, annotations = _hpa(kube_server)
        assert (minimum, _ours(annotations)) == (2, set()), (minimum, annotations)
        assert not controller.pending_restores
        text = controller.metrics.generate_latest().decode()
        assert 'predictive_scaler_restores_total{result="failed"} 3.0' in text, text
        assert 'predictive_scaler_restores_total{result="restored"} 1.0' in text, text
    finally:
        await controller.aclose()


async def test_a_restore_whose_hpa_is_gone_is_dropped(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 5, 10, annotations=dict(RAISED)))
    kube_server.fail_next("PATCH", HPA_PATH, 503, times=1)
    controller = _controller(kube_api, prometheus.url, clock)
    try:
        controller.apply_config(parse_config(NO_TARGETS))
        await controller.run_due()
        assert controller.pending_restores
        kube_server.delete_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "nim")
        clock.advance(600)
        await controller.run_due()
        assert not controller.pending_restores
    finally:
        await controller.aclose()


NAMESPACED_ONLY = [
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["get", "list", "patch"],
        "namespace": NS,
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"], "namespace": NS},
]


@pytest.mark.parametrize("kube_rbac_rules", [NAMESPACED_ONLY], ids=["role"])
async def test_the_sweep_lists_per_namespace_when_rbac_refuses_a_cluster_list(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 5, 10, annotations=dict(RAISED)))
    controller = _controller(kube_api, prometheus.url, clock)
    try:
        controller.apply_config(parse_config(CONFIG))  # the namespace is named here...
        controller.apply_config(parse_config(NO_TARGETS))  # ...and stays known once removed
        await controller.run_due()
        minimum, annotations = _hpa(kube_server)
        assert (minimum, _ours(annotations)) == (2, set()), (minimum, annotations)
        statuses = {
            (r.path, r.status) for r in kube_server.requests if r.path.endswith("autoscalers")
        }
        assert ("/apis/autoscaling/v2/horizontalpodautoscalers", 403) in statuses, statuses
        assert (f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers", 200) in statuses
    finally:
        await controller.aclose()


async def test_failed_restores_back_off_through_the_delay_sequence(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
) -> None:
    from predictive_scaler.restore import RESTORE_BACKOFF_SECONDS

    kube_server.put_object(make_hpa(NS, "nim", 5, 10, annotations=dict(RAISED)))
    kube_server.fail_next("PATCH", HPA_PATH, 503, times=4)
    controller = _controller(kube_api, prometheus.url, clock)
    attempts: list[float] = []
    try:
        controller.apply_config(parse_config(NO_TARGETS))
        for second in range(400):
            before = sum(1 for r in kube_server.requests if r.method == "PATCH")
            await controller.restore_pending()
            if sum(1 for r in kube_server.requests if r.method == "PATCH") > before:
                attempts.append(second)
            if not controller.pending_restores:
                break
            clock.advance(1)
    finally:
        await controller.aclose()
    expected = [0.0]
    for delay in RESTORE_BACKOFF_SECONDS[:4]:
        expected.append(expected[-1] + delay)
    assert attempts == expected, attempts
    assert _hpa(kube_server)[0] == 2


async def test_restore_on_exit_gives_a_dry_run_targets_leftover_raise_back(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
) -> None:
    """``--restore-on-exit`` hands back every HPA of ours, a dry-run target's included (it
    carries the raise of the live run before it)."""
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    controller = _controller(kube_api, prometheus.url, clock)
    try:
        controller.apply_config(parse_config(CONFIG))
        [report] = await controller.run_due()
        assert report.applied == 3
        controller.apply_config(parse_config(DRY))
        await controller.restore_all()
        minimum, annotations = _hpa(kube_server)
        assert (minimum, _ours(annotations)) == (1, set()), (minimum, annotations)
    finally:
        await controller.aclose()
