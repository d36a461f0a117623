"""predictive_scaler.kube against the API server double (real kubernetes_asyncio client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from predictive_scaler.kube import (
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_REASON,
    ConfigMapEvent,
    ConflictError,
    ForbiddenError,
    HpaSnapshot,
    KubeApiError,
    KubeClient,
    NotFoundError,
    ObjectRef,
    load_api_client,
    parse_quantity,
)
from tests.kube_double import KubeDouble, make_configmap, make_hpa, write_kubeconfig

NS = "inference"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, request_timeout_seconds=5, reporting_instance="pod-a")


def _stored_hpa(server: KubeDouble, name: str = "llm") -> dict[str, object]:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, name)
    assert stored is not None
    return stored


# ---------------------------------------------------------------- quantities


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("700m", 0.7),
        ("1", 1.0),
        ("0.7", 0.7),
        ("2k", 2000.0),
        ("1Ki", 1024.0),
        ("1.5Gi", 1.5 * 2**30),
        ("250u", 0.00025),
        ("1e3", 1000.0),
        ("+.5", 0.5),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_parse_quantity(text: str | float, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "m", "1.2.3", "10 m", "1KiB", "abc", "1x"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


# ---------------------------------------------------------------- HPAs


async def test_read_hpa_parses_replicas_targets_and_annotations(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    hpa = make_hpa(NS, "llm", 2, 12, current_replicas=3, desired_replicas=4)
    hpa["metadata"]["annotations"] = {ANNOTATION_BASE_MIN_REPLICAS: "2", "other": "x"}
    hpa["spec"]["metrics"].append(
        {
            "type": "External",
            "external": {
                "metric": {"name": "queue_depth"},
                "target": {"type": "AverageValue", "averageValue": "2k"},
            },
        }
    )
    stored = kube_server.put_object(hpa)

    snapshot = await kube.read_hpa(NS, "llm")

    assert (snapshot.namespace, snapshot.name) == (NS, "llm")
    assert snapshot.resource_version == stored["metadata"]["resourceVersion"]
    assert snapshot.uid == stored["metadata"]["uid"]
    assert (snapshot.min_replicas, snapshot.max_replicas) == (2, 12)
    assert snapshot.current_replicas == 3
    assert snapshot.annotations == {ANNOTATION_BASE_MIN_REPLICAS: "2", "other": "x"}
    assert snapshot.base_min_replicas == 2
    assert snapshot.target_average_value_for("gpu_cache_usage_perc") == pytest.approx(0.7)
    assert snapshot.target_average_value_for("queue_depth") == pytest.approx(2000.0)
    assert snapshot.target_average_value_for("missing") is None
    assert snapshot.scale_target_ref["name"] == "llm"


async def test_read_hpa_defaults_when_fields_are_absent(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", None, 5))
    snapshot = await kube.read_hpa(NS, "llm")
    assert (snapshot.min_replicas, snapshot.current_replicas) == (1, 0)
    assert snapshot.annotations == {} and snapshot.base_min_replicas is None


async def test_read_missing_hpa_raises_not_found(kube: KubeClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await kube.read_hpa(NS, "absent")
    assert caught.value.status == 404 and caught.value.reason == "NotFound"


async def test_patch_changes_min_replicas_and_annotations_only(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    hpa = make_hpa(NS, "llm", 2, 12, current_replicas=2)
    hpa["metadata"]["annotations"] = {ANNOTATION_REASON: "old", "keep": "me"}
    before = kube_server.put_object(hpa)
    snapshot = await kube.read_hpa(NS, "llm")
    forecast = json.dumps({"upper": 3.1, "horizon_seconds": 600})

    patched = await kube.patch_hpa_min_replicas(
        snapshot,
        5,
        {
            ANNOTATION_BASE_MIN_REPLICAS: "2",
            ANNOTATION_LAST_FORECAST: forecast,
            ANNOTATION_MODEL: "holt-winters",
            ANNOTATION_REASON: None,  # removed
        },
    )

    after = _stored_hpa(kube_server)
    assert after["spec"] == {**before["spec"], "minReplicas": 5}
    assert after["status"] == before["status"]
    assert after["metadata"]["annotations"] == {
        "keep": "me",
        ANNOTATION_BASE_MIN_REPLICAS: "2",
        ANNOTATION_LAST_FORECAST: forecast,
        ANNOTATION_MODEL: "holt-winters",
    }
    assert patched.min_replicas == 5 and patched.max_replicas == 12
    assert patched.resource_version == after["metadata"]["resourceVersion"]
    patches = [r for r in kube_server.requests if r.method == "PATCH"]
    assert len(patches) == 1  # one merge patch, nothing else written


async def test_patch_with_stale_snapshot_conflicts_and_changes_nothing(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 12))
    stale = await kube.read_hpa(NS, "llm")
    kube_server.put_object(make_hpa(NS, "llm", 3, 12))  # a user edits minReplicas by hand
    before = _stored_hpa(kube_server)

    with pytest.raises(ConflictError) as caught:
        await kube.patch_hpa_min_replicas(stale, 6, {ANNOTATION_REASON: "raised"})

    assert caught.value.status == 409
    assert _stored_hpa(kube_server) == before


async def test_invalid_min_replicas_is_rejected(kube_server: KubeDouble, kube: KubeClient) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 4))
    snapshot = await kube.read_hpa(NS, "llm")
    with pytest.raises(KubeApiError) as caught:  # the server refuses min > max
        await kube.patch_hpa_min_replicas(snapshot, 5, {})
    assert caught.value.status == 422
    with pytest.raises(ValueError, match=">= 1"):
        await kube.patch_hpa_min_replicas(snapshot, 0, {})


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(403, ForbiddenError), (404, NotFoundError), (409, ConflictError), (500, KubeApiError)],
)
async def test_api_errors_are_typed(
    kube_server: KubeDouble, kube: KubeClient, status: int, error_type: type[KubeApiError]
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 4))
    snapshot = await kube.read_hpa(NS, "llm")
    kube_server.fail_next("PATCH", "/horizontalpodautoscalers/llm$", status, message="boom")
    with pytest.raises(error_type) as caught:
        await kube.patch_hpa_min_replicas(snapshot, 3, {})
    assert (type(caught.value), caught.value.status, caught.value.message) == (
        error_type,
        status,
        "boom",
    )


async def test_retry_after_is_reported(kube_server: KubeDouble, kube: KubeClient) -> None:
    kube_server.fail_next(
        "GET", "/horizontalpodautoscalers/llm$", 429, headers={"Retry-After": "7"}
    )
    with pytest.raises(KubeApiError) as caught:
        await kube.read_hpa(NS, "llm")
    assert (caught.value.status, caught.value.retry_after_seconds) == (429, 7.0)


# ---------------------------------------------------------------- events


async def test_event_on_hpa_carries_reason_and_involved_object(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 4))
    snapshot = await kube.read_hpa(NS, "llm")

    name = await kube.create_event(
        snapshot, "MinReplicasRaised", "minReplicas 2 -> 3: forecast p90 2.4", now=T0
    )

    [event] = kube_server.list_events(NS)
    assert event["metadata"]["name"] == name and name.startswith("llm.")
    assert event["reason"] == "MinReplicasRaised"
    assert event["message"] == "minReplicas 2 -> 3: forecast p90 2.4"
    assert event["type"] == "Normal"
    assert event["involvedObject"] == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "name": "llm",
        "namespace": NS,
        "uid": snapshot.uid,
    }
    assert event["source"] == {"component": "predictive-scaler"}
    assert event["reportingComponent"] == "predictive-scaler"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2025-03-01T12:00:00Z"
    assert event["count"] == 1


async def test_event_on_any_object(kube_server: KubeDouble, kube: KubeClient) -> None:
    ref = ObjectRef("v1", "ConfigMap", NS, "predictive-scaler")
    await kube.create_event(ref, "ConfigRejected", "targets[0].warmup: must be > 0", now=T0,
                            type_="Warning")  # fmt: skip
    [event] = kube_server.list_events(NS)
    assert event["involvedObject"]["kind"] == "ConfigMap" and event["type"] == "Warning"
    with pytest.raises(ValueError, match="naive"):
        await kube.create_event(ref, "X", "y", now=datetime(2025, 1, 1))


# ---------------------------------------------------------------- ConfigMap watch


async def _next(stream: AsyncIterator[ConfigMapEvent]) -> ConfigMapEvent:
    return await asyncio.wait_for(anext(stream), 5)


@pytest.mark.parametrize("abort", [False, True], ids=["clean-end", "connection-reset"])
async def test_watch_configmap_yields_state_updates_and_survives_dropped_watches(
    kube_server: KubeDouble, kube: KubeClient, kube_api: client.ApiClient, abort: bool
) -> None:
    kube_server.put_object(make_configmap(NS, "predictive-scaler", {"config.yaml": "a: 1"}))
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    stream = kube.watch_configmap(NS, "predictive-scaler", backoff_seconds=(0.5,), sleep=fake_sleep)
    try:
        event_type, data, version = await _next(stream)
        assert (event_type, data) == ("ADDED", {"config.yaml": "a: 1"})

        core = client.CoreV1Api(kube_api)
        await core.patch_namespaced_config_map(
            "predictive-scaler", NS, {"data": {"config.yaml": "a: 2"}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        update = await _next(stream)
        assert update[:2] == ("MODIFIED", {"config.yaml": "a: 2"})
        assert int(update.resource_version) > int(version)

        assert kube_server.drop_watches(abort=abort) == 1
        kube_server.put_object(make_configmap(NS, "predictive-scaler", {"config.yaml": "a: 3"}))
        assert (await _next(stream))[:2] == ("MODIFIED", {"config.yaml": "a: 3"})
        assert kube_server.open_watches == 1
        assert delays == ([0.5] if abort else [])  # a reset backs off, a clean end does not

        kube_server.delete_object("v1", "ConfigMap", NS, "predictive-scaler")
        assert (await _next(stream))[:2] == ("DELETED", {})
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_configmap_reports_absence_then_creation(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    stream = kube.watch_configmap(NS, "predictive-scaler")
    try:
        assert (await _next(stream))[:2] == ("DELETED", {})
        kube_server.put_object(make_configmap(NS, "predictive-scaler", {"k": "v"}))
        assert (await _next(stream))[:2] == ("ADDED", {"k": "v"})
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_configmap_relists_after_410(kube_server: KubeDouble, kube: KubeClient) -> None:
    kube_server.put_object(make_configmap(NS, "predictive-scaler", {"k": "1"}))
    stream = kube.watch_configmap(NS, "predictive-scaler", backoff_seconds=(0.0,))
    try:
        assert (await _next(stream))[:2] == ("ADDED", {"k": "1"})
        pending = asyncio.ensure_future(_next(stream))  # the generator opens its watch
        await kube_server.wait_for_watches(1)
        kube_server.put_object(make_configmap(NS, "unrelated"))
        kube_server.compact()
        kube_server.drop_watches()  # the re-watch from the old version now gets 410 Gone
        assert (await pending)[:2] == ("ADDED", {"k": "1"})  # re-listed: current state again
        kube_server.put_object(make_configmap(NS, "predictive-scaler", {"k": "2"}))
        assert (await _next(stream))[:2] == ("MODIFIED", {"k": "2"})
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_read_configmap(kube_server: KubeDouble, kube: KubeClient) -> None:
    stored = kube_server.put_object(make_configmap(NS, "cfg", {"a": "b"}))
    assert await kube.read_configmap(NS, "cfg") == (
        {"a": "b"},
        stored["metadata"]["resourceVersion"],
    )
    with pytest.raises(NotFoundError):
        await kube.read_configmap(NS, "nope")


# ---------------------------------------------------------------- configuration


async def test_load_api_client_from_kubeconfig(
    kube_server: KubeDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, kube_server.token)
    kube_server.put_object(make_hpa("default", "llm", 2, 4))
    api_client = await load_api_client(str(path), None, request_timeout_seconds=3)
    try:
        snapshot = await KubeClient(api_client).read_hpa("default", "llm")
    finally:
        await api_client.close()
    assert isinstance(snapshot, HpaSnapshot) and snapshot.min_replicas == 2
