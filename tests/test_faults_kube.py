"""Kubernetes faults, through the real client against the API double.

409 storms, 429 with Retry-After, 5xx, 403, dropped watches, the HPA deleted (and recreated)
between our read and our patch, maxReplicas lowered by a user below our minimum, a kill -9
in the middle of a cycle, and the leader Lease lost in the middle of a patch. After each:
``base <= minReplicas <= maxReplicas``, at most one successful patch per target per cycle,
no exception out of a cycle, and the state in the HPA's annotations is enough to go on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.kube import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    HpaSnapshot,
    KubeClient,
    ObjectRef,
)
from predictive_scaler.leader import LeaderElector
from predictive_scaler.reconcile import MANAGED_ANNOTATIONS, MAX_CONFLICT_RETRIES
from predictive_scaler.runtime import Controller
from tests.chaos import HookedKube, PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_configmap, make_hpa
from tests.support import (
    FakeClock,
    QuiescentSleeper,
    config_yaml,
    run_options,
    running_controller,
)

STEP = 300.0
NS = "busy"
HPA_PATH = f"/namespaces/{NS}/horizontalpodautoscalers/nim$"

CONFIG = config_yaml(
    """\
targets:
  - hpa: {namespace: busy, name: nim}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{${matchers}})'
        hpaMetric: gpu_cache_usage_perc
"""
)
NO_TARGETS = CONFIG.split("targets:", maxsplit=1)[0] + "targets: []\n"


def flat_demand(namespace: str, ts: npt.NDArray[np.float64]) -> list[tuple[dict[str, str], Any]]:
    """``busy``: two pods at 0.9 (needs 3 pods at 0.7)."""
    if namespace != NS:
        return []
    return [({"namespace": namespace, "pod": f"nim-{i}"}, np.full(ts.size, 0.9)) for i in (0, 1)]


@pytest.fixture
async def prometheus() -> AsyncIterator[PrometheusFaultProxy]:
    async with PrometheusFaultProxy(series=flat_demand) as fake:
        yield fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 3, 3, 12, 0, 30, tzinfo=UTC))


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


async def inline(fit):  # type: ignore[no-untyped-def]
    return fit()


@pytest.fixture
def make_controller(
    prometheus: PrometheusFaultProxy, clock: FakeClock
) -> Callable[..., Controller]:
    def make(kube: Any, *, elector: LeaderElector | None = None, text: str = CONFIG) -> Controller:
        controller = Controller(
            kube, prometheus_url=prometheus.url, clock=clock, elector=elector, fit_runner=inline
        )
        controller.apply_config(parse_config(text))
        return controller

    return make


def stored(server: KubeDouble, name: str = "nim") -> dict[str, Any]:
    obj = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, name)
    assert obj is not None
    return obj


def check_invariants(server: KubeDouble, base: int) -> int:
    obj = stored(server)
    low, high = obj["spec"]["minReplicas"], obj["spec"]["maxReplicas"]
    assert min(base, high) <= low <= high, (base, low, high)
    return int(low)


def hpa_patches(server: KubeDouble, since: int = 0, *, ok_only: bool = True) -> int:
    return sum(
        1
        for r in server.requests[since:]
        if r.method == "PATCH"
        and "horizontalpodautoscalers" in r.path
        and (r.status == 200 or not ok_only)
    )


def raised(min_replicas: int = 6, base: int = 1, max_replicas: int = 10) -> dict[str, Any]:
    return make_hpa(
        NS,
        "nim",
        min_replicas,
        max_replicas,
        annotations={
            ANNOTATION_BASE_MIN_REPLICAS: str(base),
            ANNOTATION_APPLIED_MIN_REPLICAS: str(min_replicas),
        },
    )


# ---------------------------------------------------------------- API errors


async def test_409_storm_is_abandoned_after_bounded_retries_then_applied_once(
    kube_server: KubeDouble,
    kube: KubeClient,
    make_controller: Callable[..., Controller],
    clock: FakeClock,
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    kube_server.fail_next("PATCH", HPA_PATH, 409, times=2 * MAX_CONFLICT_RETRIES + 1)
    controller = make_controller(kube)
    try:
        for _cycle in range(3):
            mark = len(kube_server.requests)
            [report] = await controller.run_due(force=True)
            assert hpa_patches(kube_server, mark, ok_only=False) <= MAX_CONFLICT_RETRIES
            assert hpa_patches(kube_server, mark) <= 1
            check_invariants(kube_server, base=1)
            clock.advance(STEP)
        assert report.patch_result == "applied"  # the storm passed: applied, once
        assert stored(kube_server)["spec"]["minReplicas"] == 3
        assert hpa_patches(kube_server) == 1
    finally:
        await controller.aclose()


@pytest.mark.parametrize(
    ("method", "status", "headers"),
    [
        ("GET", 429, {"Retry-After": "7"}),
        ("GET", 500, {}),
        ("GET", 503, {}),
        ("GET", 403, {}),
        ("PATCH", 429, {"Retry-After": "3"}),
        ("PATCH", 500, {}),
        ("PATCH", 403, {}),
        ("PATCH", 422, {}),
    ],
)
async def test_api_errors_leave_the_hpa_alone_and_the_next_cycle_works(
    kube_server: KubeDouble,
    kube: KubeClient,
    make_controller: Callable[..., Controller],
    clock: FakeClock,
    method: str,
    status: int,
    headers: Mapping[str, str],
) -> None:
    # A PATCH fault needs a cycle that writes: one that raises (a steady HPA is not rewritten).
    kube_server.put_object(raised(1) if method == "PATCH" else raised())
    before = stored(kube_server)["metadata"]["resourceVersion"]
    kube_server.fail_next(method, HPA_PATH, status, times=1, headers=headers)
    controller = make_controller(kube)
    try:
        [report] = await controller.run_due()  # never raises
        assert report.error_status == status or report.patch_result == "failed"
        assert stored(kube_server)["metadata"]["resourceVersion"] == before
        text = controller.metrics.generate_latest().decode()
        assert "predictive_scaler_cycle_errors_total{" in text
        assert 'kind="internal"' not in text
        clock.advance(STEP)
        [again] = await controller.run_due()
        assert again.error is None and again.patch_result in {"applied", None}
        check_invariants(kube_server, base=1)
    finally:
        await controller.aclose()


async def test_forbidden_events_do_not_undo_the_patch(
    kube_server: KubeDouble, kube: KubeClient, make_controller: Callable[..., Controller]
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    kube_server.fail_next("POST", f"/namespaces/{NS}/events$", 403)
    controller = make_controller(kube)
    try:
        [report] = await controller.run_due()
    finally:
        await controller.aclose()
    assert report.patch_result == "applied" and stored(kube_server)["spec"]["minReplicas"] == 3
    assert kube_server.list_events(NS) == []


# ---------------------------------------------------------------- the HPA changes under us


async def test_hpa_deleted_and_recreated_between_read_and_patch(
    kube_server: KubeDouble, kube: KubeClient, make_controller: Callable[..., Controller]
) -> None:
    """Our read saw our own raise to 2 (base 1), and the cycle raises on to 3; then the HPA
    was deleted and created again by the user with minReplicas 2. The guarded patch gets 409,
    the re-read sees the new object (no annotations): its minReplicas is the new base, and
    one patch lands."""
    kube_server.put_object(raised(2, base=1))
    hooked = HookedKube(kube)

    def recreate(_snapshot: HpaSnapshot) -> None:
        kube_server.delete_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "nim")
        kube_server.put_object(make_hpa(NS, "nim", 2, 10))

    hooked.after_read(recreate)
    controller = make_controller(hooked)
    try:
        [report] = await controller.run_due()
    finally:
        await controller.aclose()
    obj = stored(kube_server)
    assert obj["metadata"]["annotations"][ANNOTATION_BASE_MIN_REPLICAS] == "2"
    assert obj["spec"]["minReplicas"] == 3 and report.patch_result == "applied"
    assert hpa_patches(kube_server) == 1


async def test_hpa_deleted_mid_cycle_is_not_recreated_by_the_patch(
    kube_server: KubeDouble,
    kube: KubeClient,
    make_controller: Callable[..., Controller],
    clock: FakeClock,
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    hooked = HookedKube(kube)
    hooked.before_patch(
        lambda _s: kube_server.delete_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "nim")
    )
    controller = make_controller(hooked)
    try:
        [report] = await controller.run_due()
        assert report.patch_result in {"failed", "conflict"}
        assert (
            kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "nim") is None
        )
        clock.advance(STEP)
        [gone] = await controller.run_due()
        assert gone.error_status == 404
        # Created again later: managed again from its own minReplicas.
        kube_server.put_object(make_hpa(NS, "nim", 2, 10))
        clock.advance(STEP)
        [back] = await controller.run_due()
        assert back.base_min_replicas == 2 and stored(kube_server)["spec"]["minReplicas"] == 3
        # Removed from the configuration: its own base comes back.
        controller.apply_config(parse_config(NO_TARGETS))
        await controller.run_due()
        assert stored(kube_server)["spec"]["minReplicas"] == 2
    finally:
        await controller.aclose()


async def test_max_replicas_lowered_by_a_user_below_our_minimum(
    kube_server: KubeDouble,
    kube: KubeClient,
    kube_api: client.ApiClient,
    make_controller: Callable[..., Controller],
    clock: FakeClock,
) -> None:
    kube_server.put_object(raised(6, base=1, max_replicas=10))
    controller = make_controller(kube)
    autoscaling = client.AutoscalingV2Api(kube_api)
    try:
        # Lowering only maxReplicas under our raised minimum is refused by the API server
        # (maxReplicas must be >= minReplicas), like `kubectl apply` of the user's manifest.
        with pytest.raises(client.ApiException) as refused:
            await autoscaling.patch_namespaced_horizontal_pod_autoscaler(
                "nim",
                NS,
                {"spec": {"maxReplicas": 4}},
                _content_type="application/merge-patch+json",
            )
        assert refused.value.status == 422
        # ...so the user lowers both: their minReplicas is obeyed as the new base, and our
        # need (3) fits under the new maximum.
        await autoscaling.patch_namespaced_horizontal_pod_autoscaler(
            "nim",
            NS,
            {"spec": {"minReplicas": 1, "maxReplicas": 4}},
            _content_type="application/merge-patch+json",
        )
        [report] = await controller.run_due()
        assert report.base_min_replicas == 1 and check_invariants(kube_server, 1) == 3
        # Below our need: capped at maxReplicas, which we never touch.
        await autoscaling.patch_namespaced_horizontal_pod_autoscaler(
            "nim",
            NS,
            {"spec": {"minReplicas": 2, "maxReplicas": 2}},
            _content_type="application/merge-patch+json",
        )
        clock.advance(STEP)
        [capped] = await controller.run_due()
        assert check_invariants(kube_server, 2) == 2 and capped.recommended == 2
        assert stored(kube_server)["spec"]["maxReplicas"] == 2
    finally:
        await controller.aclose()


class _InvalidHpa:
    """An HpaApi whose HPA has minReplicas above maxReplicas (an API server that did not
    validate, or an object written before validation existed)."""

    def __init__(self) -> None:
        self.snapshot = HpaSnapshot(
            NS,
            "nim",
            "1",
            8,
            5,
            5,
            {ANNOTATION_BASE_MIN_REPLICAS: "1", ANNOTATION_APPLIED_MIN_REPLICAS: "8"},
        )
        self.patched: list[tuple[int, dict[str, str | None]]] = []

    async def read_hpa(self, namespace: str, name: str) -> HpaSnapshot:
        return self.snapshot

    async def patch_hpa_min_replicas(
        self, snapshot: HpaSnapshot, min_replicas: int, annotations: Mapping[str, str | None]
    ) -> HpaSnapshot:
        self.patched.append((min_replicas, dict(annotations)))
        return snapshot

    async def create_event(
        self, involved: HpaSnapshot | ObjectRef, reason: str, message: str, **_: Any
    ) -> str:
        return "event"


async def test_min_above_max_is_brought_under_max(
    prometheus: PrometheusFaultProxy, clock: FakeClock
) -> None:
    from predictive_scaler.prometheus import PrometheusSettings, PrometheusSource
    from predictive_scaler.reconcile import TargetReconciler

    api = _InvalidHpa()
    source = PrometheusSource(PrometheusSettings(url=prometheus.url))
    try:
        [target] = parse_config(CONFIG).targets
        report = await TargetReconciler(
            target, source, api, clock=clock, fit_runner=inline
        ).reconcile()
    finally:
        source.close()
    [(new_min, _)] = api.patched
    assert new_min == 5 and report.recommended == 5


# ---------------------------------------------------------------- kill -9 and restart


@pytest.mark.parametrize("when", ["after_read", "before_patch", "before_event"])
async def test_kill_9_mid_cycle_then_a_fresh_controller_continues_from_annotations(
    kube_server: KubeDouble,
    kube: KubeClient,
    make_controller: Callable[..., Controller],
    clock: FakeClock,
    when: str,
) -> None:
    """The first controller is killed in the middle of its first cycle, which raises the
    user's 1 to 3: after its read, right before its patch, or after the patch landed but
    before its Event. Its task is cancelled and nothing is cleaned up. A fresh controller
    against the same API continues from what the HPA holds: base 1 (never our own 3),
    minReplicas 3, and base 1 restored when the target is removed."""
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    hooked = HookedKube(kube)
    stuck = asyncio.Event()

    async def hang(*_args: Any, **_kwargs: Any) -> str:
        stuck.set()
        await asyncio.Event().wait()  # never returns: killed here
        return ""

    if when == "before_patch":
        hooked.before_patch(hang)
    elif when == "after_read":
        hooked.after_read(hang)
    else:
        hooked.create_event = hang  # type: ignore[method-assign]
    doomed = make_controller(hooked)
    task = asyncio.create_task(doomed.run_due())
    await asyncio.wait_for(stuck.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # No aclose(): a kill -9 leaves nothing tidy.
    assert stored(kube_server)["spec"]["minReplicas"] == (3 if when == "before_event" else 1)

    fresh = make_controller(kube)
    try:
        for _cycle in range(3):
            clock.advance(STEP)
            mark = len(kube_server.requests)
            [report] = await fresh.run_due()
            assert report.base_min_replicas == 1 and report.error is None
            assert check_invariants(kube_server, base=1) == 3
            assert hpa_patches(kube_server, mark) <= 1
        notes = stored(kube_server)["metadata"]["annotations"]
        assert notes[ANNOTATION_BASE_MIN_REPLICAS] == "1"
        assert notes[ANNOTATION_APPLIED_MIN_REPLICAS] == "3"
        fresh.apply_config(parse_config(NO_TARGETS))
        await fresh.run_due()
        obj = stored(kube_server)
        assert obj["spec"]["minReplicas"] == 1
        assert not set(MANAGED_ANNOTATIONS) & set(obj["metadata"].get("annotations") or {})
    finally:
        await fresh.aclose()


async def test_a_restarted_controller_never_adopts_our_own_raise_as_the_base(
    kube_server: KubeDouble,
    kube: KubeClient,
    make_controller: Callable[..., Controller],
    clock: FakeClock,
) -> None:
    """State recovery from annotations alone: an HPA we had raised to 6 over a base of 1.
    A fresh controller holds 6 through the scale-down delay (it has no history), then lowers
    one step a cycle to the need (3), and gives back 1 on removal."""
    kube_server.put_object(raised(6, base=1))
    fresh = make_controller(kube)
    try:
        seen = []
        for _cycle in range(6):
            [report] = await fresh.run_due()
            assert report.base_min_replicas == 1
            seen.append(check_invariants(kube_server, base=1))
            clock.advance(STEP)
        assert seen[:2] == [6, 6] and seen[-1] == 3, seen
        assert all(0 <= a - b <= 1 for a, b in itertools.pairwise(seen))
        fresh.apply_config(parse_config(NO_TARGETS))
        await fresh.run_due()
        assert stored(kube_server)["spec"]["minReplicas"] == 1
    finally:
        await fresh.aclose()


# ---------------------------------------------------------------- leadership


async def test_lease_lost_mid_patch_stops_patching_and_the_new_leader_continues(
    kube_server: KubeDouble,
    kube: KubeClient,
    make_controller: Callable[..., Controller],
    clock: FakeClock,
) -> None:
    """Our patch meets a 409; while we re-read, our lease runs out and another replica takes
    it. The retry must not write; the new leader then decides from the annotations."""
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    hooked = HookedKube(kube)
    me = LeaderElector(kube, "ops", "predictive-scaler", "me", clock=clock)
    other = LeaderElector(kube, "ops", "predictive-scaler", "other", clock=clock)
    old = make_controller(hooked, elector=me)
    new = make_controller(kube, elector=other)
    try:
        assert await old.renew_leadership()
        assert not await other.try_acquire_or_renew()  # sees our lease live (and when)

        async def lose_lease(_snapshot: HpaSnapshot) -> None:
            kube_server.fail_next("PATCH", HPA_PATH, 409)
            clock.advance(me.lease_duration_seconds + 1)
            assert await other.try_acquire_or_renew()

        hooked.before_patch(lose_lease)
        mark = len(kube_server.requests)
        [report] = await old.run_due()
        assert report.patch_result == "dry_run"  # decided, but no longer allowed to write
        assert hpa_patches(kube_server, mark) == 0
        assert stored(kube_server)["spec"]["minReplicas"] == 1
        assert not old.may_patch()
        assert not await old.renew_leadership()

        assert await new.renew_leadership()
        [taken] = await new.run_due()
        assert taken.patch_result == "applied" and check_invariants(kube_server, 1) == 3
        assert stored(kube_server)["metadata"]["annotations"][ANNOTATION_BASE_MIN_REPLICAS] == "1"
    finally:
        await old.aclose()
        await new.aclose()


# ---------------------------------------------------------------- the process


async def test_process_survives_dropped_watches_and_honours_retry_after(
    kube_server: KubeDouble,
    prometheus: PrometheusFaultProxy,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": CONFIG}))
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    slept: list[float] = []

    quiescent = QuiescentSleeper(clock)

    async def sleeper(seconds: float) -> None:
        slept.append(seconds)
        await quiescent(seconds)

    options = run_options(kube_server, prometheus.url, tmp_path, monkeypatch)
    # The first list of the ConfigMap is throttled: the retry waits for Retry-After.
    kube_server.fail_next("GET", "/namespaces/ops/configmaps$", 429, headers={"Retry-After": "42"})
    async with running_controller(
        options, clock=clock, sleeper=sleeper, quiescent=quiescent, start_within_seconds=15
    ) as running:
        controller = running.controller
        await kube_server.wait_for_watches(1)
        # The watch connection dies, twice; the controller watches again each time.
        kube_server.drop_watches(abort=True)
        await kube_server.wait_for_watches(1)
        kube_server.drop_watches(abort=True)
        await kube_server.wait_for_watches(1)
        changed = CONFIG.replace("scaleDownStep: 1", "").replace(
            "staleAfter: 15m", "staleAfter: 15m\n  scaleUpStep: 2"
        )
        kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": changed}))
        async with asyncio.timeout(15):
            while controller.config is None or controller.config.defaults.scale_up_step != 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert any(s >= 42 for s in slept), slept
        assert not running.task.done()
        assert await running.stop() == 0
