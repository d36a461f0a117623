"""The HPA informer (issue 10, item 2): list + watch as the loop's read path.

Against the API double through the real client: its resourceVersions, its 410 Gone for a
version compacted away, its RBAC. Requests are counted from the double's own record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import ConfigError, parse_config
from predictive_scaler.informer import ALL_NAMESPACES, CachedHpaApi, HpaInformer, informer_scopes
from predictive_scaler.kube import (
    ANNOTATION_BASE_MIN_REPLICAS,
    ConflictError,
    HpaList,
    HpaWatchEvent,
    KubeClient,
)
from tests.kube_double import (
    KubeDouble,
    make_api_client,
    make_configmap,
    make_hpa,
)
from tests.kube_double.rbac import RequestRecord
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import (
    FakeClock,
    QuiescentSleeper,
    eventually,
    run_options,
    running_controller,
)
from tests.test_reconcile import CONFIG, DATA_END, flat_series, hpa, min_replicas

HPA = "horizontalpodautoscalers"
TWO_TARGETS = CONFIG.split("  - hpa: {namespace: halved")[0]
"""``busy`` (raised to 3) and ``idle`` (stays at its base)."""
INTERVAL = 300.0


def hpa_requests(server: KubeDouble, verb: str) -> list[RequestRecord]:
    return [
        r
        for r in server.requests
        if r.attributes is not None
        and r.attributes.resource == HPA
        and r.attributes.verb == verb
        and not r.attributes.subresource
    ]


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


@pytest.fixture
async def informer(kube: KubeClient) -> AsyncIterator[HpaInformer]:
    made = HpaInformer(kube, backoff_seconds=(0.0,))
    try:
        yield made
    finally:
        await made.aclose()


# ---------------------------------------------------------------------------- the loop


async def test_steady_cycles_read_hpas_from_the_watch_not_by_get(
    kube_server: KubeDouble,
    prometheus: PrometheusServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The finding: one GET per target per cycle. After the cache has synced, steady cycles
    make none, and a hand edit (kubectl edit) still reaches the loop, through the watch."""
    clock = FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": TWO_TARGETS}))
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))
    kube_server.put_object(make_hpa("idle", "nim", 1, 10))
    options = run_options(kube_server, prometheus.url, tmp_path, monkeypatch)
    sleeper = QuiescentSleeper(clock)
    async with running_controller(options, clock=clock, sleeper=sleeper) as running:

        def cycled_since(moment: datetime, cycles: int) -> bool:
            reports = running.controller.last_reports.values()
            return len(reports) == 2 and all(
                (r.at - moment).total_seconds() >= cycles * INTERVAL for r in reports
            )

        await eventually(lambda: min_replicas(kube_server, "busy") == 3)
        mark = clock.now
        await eventually(lambda: cycled_since(mark, 1))  # the first cycles are behind us
        gets_before, since = len(hpa_requests(kube_server, "get")), clock.now
        cycles = 10
        await eventually(lambda: cycled_since(since, cycles))
        gets = len(hpa_requests(kube_server, "get")) - gets_before
        assert gets == 0, f"{gets} HPA GETs in {cycles} steady cycles of 2 targets"

        # kubectl edit: the user sets idle's minReplicas to 4; the next cycle adopts it as the
        # base, from the watch (still no GET).
        edited = make_hpa("idle", "nim", 4, 10)
        edited["metadata"]["annotations"] = hpa(kube_server, "idle")["metadata"].get(  # type: ignore[index]
            "annotations"
        )
        kube_server.put_object(edited)
        await eventually(
            lambda: (
                hpa(kube_server, "idle")["metadata"]  # type: ignore[index]
                .get("annotations", {})
                .get(ANNOTATION_BASE_MIN_REPLICAS)
                == "4"
            )
        )
        assert min_replicas(kube_server, "idle") == 4
        assert len(hpa_requests(kube_server, "get")) == gets_before
        assert len(hpa_requests(kube_server, "list")) == 1  # one list, then the watch


# ---------------------------------------------------------------------------- the cache


async def test_an_edit_by_someone_else_arrives_through_the_watch(
    kube_server: KubeDouble, kube: KubeClient, informer: HpaInformer
) -> None:
    kube_server.put_object(make_hpa("nim", "llm", 2, 10))
    kube_server.put_object(make_hpa("other", "llm", 1, 5))
    reads = CachedHpaApi(kube, informer)
    before_sync = await reads.read_hpa("nim", "llm")  # not synced yet: a GET
    assert before_sync.min_replicas == 2 and reads.api_reads == 1
    informer.set_scopes([ALL_NAMESPACES])
    await informer.wait_synced(5)
    assert {(s.namespace, s.name) for s in informer.snapshots()} == {
        ("nim", "llm"),
        ("other", "llm"),
    }
    gets = len(hpa_requests(kube_server, "get"))

    kube_server.put_object(make_hpa("nim", "llm", 6, 10))
    await eventually(lambda: (informer.get("nim", "llm") or before_sync).min_replicas == 6, 5)
    snapshot = await reads.read_hpa("nim", "llm")
    stored = hpa(kube_server, "nim", "llm")
    assert snapshot.resource_version == stored["metadata"]["resourceVersion"]  # type: ignore[index]
    kube_server.delete_object("autoscaling/v2", "HorizontalPodAutoscaler", "other", "llm")
    await eventually(lambda: informer.get("other", "llm") is None, 5)
    assert informer.synced
    assert len(hpa_requests(kube_server, "get")) == gets
    assert reads.cache_reads == 1


async def test_our_patch_answer_is_cached_and_a_conflict_rereads_with_a_get(
    kube_server: KubeDouble, kube: KubeClient, informer: HpaInformer
) -> None:
    kube_server.put_object(make_hpa("nim", "llm", 1, 10))
    informer.set_scopes(["nim"])
    await informer.wait_synced(5)
    reads = CachedHpaApi(kube, informer)
    first = await reads.read_hpa("nim", "llm")
    patched = await reads.patch_hpa_min_replicas(first, 3, {})
    # No chance for the watch to deliver in between: the cache already holds our write, so
    # the next patch is guarded by the version it produced, and lands.
    again = await reads.read_hpa("nim", "llm")
    assert again.resource_version == patched.resource_version != first.resource_version
    await reads.patch_hpa_min_replicas(again, 4, {})
    # A stale state (e.g. a watch event overtaken by our patch's answer) never replaces it.
    informer.observe(first)
    assert (await reads.read_hpa("nim", "llm")).resource_version != first.resource_version
    assert hpa_requests(kube_server, "get") == []

    # Someone else writes; our patch from the cached version meets 409, and the re-read the
    # reconciler then makes is a GET of the current object.
    current = await reads.read_hpa("nim", "llm")
    kube_server.put_object(make_hpa("nim", "llm", 7, 10))
    with pytest.raises(ConflictError):
        await reads.patch_hpa_min_replicas(current, 5, {})
    reread = await reads.read_hpa("nim", "llm")
    assert reread.min_replicas == 7
    assert len(hpa_requests(kube_server, "get")) == 1


class GatedSource:
    """The real client, with a gate a test closes to hold the next watch request back (to
    make changes while no watch is open, as during a reconnect)."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def list_hpas_versioned(self, namespace: str | None = None) -> HpaList:
        return await self.kube.list_hpas_versioned(namespace)

    async def watch_hpas(
        self, namespace: str | None, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[HpaWatchEvent]:
        self.waiting.set()
        await self.gate.wait()
        async for event in self.kube.watch_hpas(
            namespace, resource_version, timeout_seconds=timeout_seconds
        ):
            yield event


async def test_a_410_gone_relists(kube_server: KubeDouble, kube: KubeClient) -> None:
    source = GatedSource(kube)
    informer = HpaInformer(source, backoff_seconds=(0.0,))
    try:
        kube_server.put_object(make_hpa("nim", "llm", 1, 10))
        informer.set_scopes([ALL_NAMESPACES])
        await informer.wait_synced(5)
        await kube_server.wait_for_watches(1)
        # The watch ends; while it is away the HPA changes and the history is compacted.
        source.gate.clear()
        source.waiting.clear()
        kube_server.drop_watches()
        await asyncio.wait_for(source.waiting.wait(), 5)
        kube_server.put_object(make_hpa("nim", "llm", 8, 10))
        kube_server.put_object(make_hpa("nim", "new", 2, 10))
        kube_server.compact()
        source.gate.set()
        # Its resourceVersion is too old now: 410 Gone, and a re-list brings both changes.
        await eventually(lambda: len(hpa_requests(kube_server, "list")) == 2, 5)
        await informer.wait_synced(5)
        await eventually(lambda: informer.get("nim", "new") is not None, 5)
        assert (informer.get("nim", "llm") or pytest.fail("gone")).min_replicas == 8
        gone = [r for r in hpa_requests(kube_server, "watch") if r.status == 200]
        assert len(gone) >= 2
    finally:
        await informer.aclose()


async def test_a_watch_disconnect_recovers(
    kube_server: KubeDouble, kube: KubeClient, informer: HpaInformer
) -> None:
    kube_server.put_object(make_hpa("nim", "llm", 1, 10))
    informer.set_scopes([ALL_NAMESPACES])
    await informer.wait_synced(5)
    await kube_server.wait_for_watches(1)
    # The server's timeout ends the watch cleanly: resumed from the last version, no list.
    kube_server.drop_watches()
    await kube_server.wait_for_watches(1)
    kube_server.put_object(make_hpa("nim", "llm", 2, 10))
    await eventually(lambda: (informer.get("nim", "llm") or pytest.fail()).min_replicas == 2, 5)
    assert len(hpa_requests(kube_server, "list")) == 1
    # A connection torn down: a failure; re-listed, synced again, changes seen.
    kube_server.drop_watches(abort=True)
    await eventually(lambda: len(hpa_requests(kube_server, "list")) == 2, 5)
    await informer.wait_synced(5)
    await kube_server.wait_for_watches(1)
    kube_server.put_object(make_hpa("nim", "llm", 3, 10))
    await eventually(lambda: (informer.get("nim", "llm") or pytest.fail()).min_replicas == 3, 5)
    # An API that fails for a while: not synced meanwhile (reads GET), then back.
    kube_server.fail_next("GET", rf"/{HPA}$", 503, times=3)
    kube_server.drop_watches()
    await eventually(lambda: not informer.synced or len(hpa_requests(kube_server, "list")) > 2)
    await informer.wait_synced(5)
    assert informer.get("nim", "llm") is not None


async def test_namespaced_rbac_is_enough_and_cluster_wide_falls_back_to_get() -> None:
    """A Role in namespace ``nim`` only: the per-namespace informer syncs; an all-namespaces
    one is refused (403), stays unsynced, and every read is a GET that still works."""
    rules = [
        {
            "apiGroups": ["autoscaling"],
            "resources": [HPA],
            "verbs": ["get", "list", "watch", "patch"],
            "namespace": "nim",
        }
    ]
    async with KubeDouble(rules=rules) as server:
        server.put_object(make_hpa("nim", "llm", 2, 10))
        api = make_api_client(server.url, server.token)
        kube = KubeClient(api)
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            await asyncio.sleep(0)

        namespaced = HpaInformer(kube, sleep=sleep)
        cluster = HpaInformer(kube, sleep=sleep, backoff_seconds=(1.0, 2.0))
        try:
            namespaced.set_scopes(["nim"])
            await namespaced.wait_synced(5)
            assert namespaced.get("nim", "llm") is not None
            cluster.set_scopes([ALL_NAMESPACES])
            await eventually(lambda: len(slept) >= 3, 5)
            assert not cluster.synced and slept[:3] == [1.0, 2.0, 2.0]  # backed off
            refused = [r for r in server.requests if r.status == 403]
            assert refused and all(r.attributes and r.attributes.namespace is None for r in refused)
            reads = CachedHpaApi(kube, cluster)
            assert (await reads.read_hpa("nim", "llm")).min_replicas == 2
            assert reads.api_reads == 1
        finally:
            await cluster.aclose()
            await namespaced.aclose()
            await api.close()


@pytest.mark.parametrize(
    ("written", "mode", "scopes"),
    [
        ("cluster", "cluster", [ALL_NAMESPACES]),
        ("namespaces", "namespaces", ["a", "b"]),
        ("off", "off", None),  # YAML 1.1 reads a bare off as false
        ('"off"', "off", None),
    ],
)
def test_hpa_watch_setting_decides_the_scopes(
    written: str, mode: str, scopes: list[str | None] | None
) -> None:
    config = parse_config(
        f"controller:\n  hpaWatch: {written}\ntargets:\n"
        "  - hpa: {namespace: b, name: x}\n  - hpa: {namespace: a, name: y}\n"
        "  - hpa: {namespace: b, name: z}\n"
    )
    assert config.controller.hpa_watch == mode
    assert informer_scopes(mode, (t.namespace for t in config.targets)) == scopes


def test_hpa_watch_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"controller\.hpaWatch: got True: must be one of"):
        parse_config("controller:\n  hpaWatch: yes\ntargets: []\n")
