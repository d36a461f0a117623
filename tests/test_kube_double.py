"""The Kubernetes API server double, driven through the real kubernetes_asyncio client."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kube_double import (
    DEFAULT_TOKEN,
    ApiError,
    KubeDouble,
    make_api_client,
    make_configmap,
    make_hpa,
    write_kubeconfig,
)

NS = "inference"
MERGE = "application/merge-patch+json"


def _status(error: ApiException) -> dict[str, object]:
    body = json.loads(error.body)
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == error.status
    return body  # type: ignore[no-any-return]


def _hpa_stored(server: KubeDouble, name: str = "llm") -> dict[str, object]:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, name)
    assert stored is not None
    return stored


# ---------------------------------------------------------------- reads


async def test_read_and_list_hpa(kube_server: KubeDouble, kube_api: client.ApiClient) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 8, current_replicas=3))
    kube_server.put_object(make_hpa("other", "llm", 1, 4))
    api = client.AutoscalingV2Api(kube_api)

    hpa = await api.read_namespaced_horizontal_pod_autoscaler("llm", NS)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 8)
    assert hpa.status.current_replicas == 3
    assert hpa.metadata.uid and hpa.metadata.generation == 1
    assert hpa.metadata.creation_timestamp.tzinfo is not None
    assert hpa.spec.metrics[0].pods.target.average_value == "700m"

    listed = await api.list_namespaced_horizontal_pod_autoscaler(NS)
    assert [i.metadata.name for i in listed.items] == ["llm"]
    assert int(listed.metadata.resource_version) >= int(hpa.metadata.resource_version)
    everywhere = await api.list_horizontal_pod_autoscaler_for_all_namespaces()
    assert sorted(i.metadata.namespace for i in everywhere.items) == [NS, "other"]


async def test_missing_object_is_404_status(kube_api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        await client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler("no", NS)
    assert caught.value.status == 404
    assert _status(caught.value)["reason"] == "NotFound"


async def test_every_write_gets_a_new_global_resource_version(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    first = await core.create_namespaced_config_map(NS, make_configmap(NS, "a", {"k": "1"}))
    second = await core.create_namespaced_config_map(NS, make_configmap(NS, "b"))
    patched = await core.patch_namespaced_config_map(
        "a", NS, {"data": {"k": "2"}}, _content_type=MERGE
    )
    versions = [int(o.metadata.resource_version) for o in (first, second, patched)]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert kube_server.resource_version == patched.metadata.resource_version
    assert patched.metadata.uid == first.metadata.uid
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_config_map(NS, make_configmap(NS, "a"))
    assert (caught.value.status, _status(caught.value)["reason"]) == (409, "AlreadyExists")


# ---------------------------------------------------------------- patches and concurrency


async def test_merge_patch_of_min_replicas_changes_only_that_field(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    before = kube_server.put_object(make_hpa(NS, "llm", 2, 8, current_replicas=2))
    api = client.AutoscalingV2Api(kube_api)

    patched = await api.patch_namespaced_horizontal_pod_autoscaler(
        "llm",
        NS,
        {
            "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
            "spec": {"minReplicas": 5},
        },
        _content_type=MERGE,
    )

    after = _hpa_stored(kube_server)
    assert patched.spec.min_replicas == 5
    assert after["spec"] == {**before["spec"], "minReplicas": 5}
    assert after["status"] == before["status"]
    assert after["metadata"]["generation"] == 2
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])


async def test_merge_patch_with_stale_resource_version_is_409(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    stale = kube_server.put_object(make_hpa(NS, "llm", 2, 8))["metadata"]["resourceVersion"]
    kube_server.put_object(make_hpa(NS, "llm", 3, 8))  # someone else wrote since
    before = _hpa_stored(kube_server)

    with pytest.raises(ApiException) as caught:
        await client.AutoscalingV2Api(kube_api).patch_namespaced_horizontal_pod_autoscaler(
            "llm",
            NS,
            {"metadata": {"resourceVersion": stale}, "spec": {"minReplicas": 5}},
            _content_type=MERGE,
        )

    assert caught.value.status == 409
    assert _status(caught.value)["reason"] == "Conflict"
    assert _hpa_stored(kube_server) == before


async def test_put_with_stale_resource_version_is_409(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    created = await core.create_namespaced_config_map(NS, make_configmap(NS, "cfg", {"a": "1"}))
    body = make_configmap(NS, "cfg", {"a": "2"})
    body["metadata"]["resourceVersion"] = created.metadata.resource_version
    replaced = await core.replace_namespaced_config_map("cfg", NS, body)
    assert replaced.data == {"a": "2"}

    body["data"] = {"a": "3"}  # still carries the first resourceVersion
    with pytest.raises(ApiException) as caught:
        await core.replace_namespaced_config_map("cfg", NS, body)
    assert caught.value.status == 409
    assert (await core.read_namespaced_config_map("cfg", NS)).data == {"a": "2"}


async def test_json_patch_and_strategic_merge_patch(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 8))
    api = client.AutoscalingV2Api(kube_api)

    ops = [
        {"op": "test", "path": "/spec/minReplicas", "value": 2},
        {"op": "replace", "path": "/spec/minReplicas", "value": 4},
        {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}},
        {"op": "remove", "path": "/metadata/labels"},
    ]
    patched = await api.patch_namespaced_horizontal_pod_autoscaler("llm", NS, ops)
    assert patched.spec.min_replicas == 4
    assert patched.metadata.annotations == {"a/b": "c"}
    assert patched.metadata.labels is None

    with pytest.raises(ApiException) as caught:  # the test op guards like a precondition
        await api.patch_namespaced_horizontal_pod_autoscaler(
            "llm", NS, [{"op": "test", "path": "/spec/minReplicas", "value": 2}]
        )
    assert caught.value.status == 422

    strategic = await api.patch_namespaced_horizontal_pod_autoscaler(
        "llm",
        NS,
        {"spec": {"maxReplicas": 9}},  # the client picks strategic merge for dicts
    )
    assert (strategic.spec.min_replicas, strategic.spec.max_replicas) == (4, 9)


async def test_unknown_patch_content_type_is_415(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 8))
    with pytest.raises(ApiException) as caught:
        await client.AutoscalingV2Api(kube_api).patch_namespaced_horizontal_pod_autoscaler(
            "llm", NS, {"spec": {"minReplicas": 3}}, _content_type="application/json"
        )
    assert caught.value.status == 415


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"spec": {"minReplicas": 9}}, "minReplicas"),
        ({"spec": {"minReplicas": 0}}, "greater than or equal to 1"),
        ({"spec": {"minReplica": 3}}, "'minReplica' was unexpected"),
        ({"metadata": {"annotations": {"x": 1}}}, "annotations"),
        ({"spec": {"maxReplicas": "ten"}}, "maxReplicas"),
    ],
)
async def test_invalid_hpa_is_422_and_store_unchanged(
    kube_server: KubeDouble, kube_api: client.ApiClient, patch: dict[str, object], message: str
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 8))
    before = _hpa_stored(kube_server)

    with pytest.raises(ApiException) as caught:
        await client.AutoscalingV2Api(kube_api).patch_namespaced_horizontal_pod_autoscaler(
            "llm", NS, patch, _content_type=MERGE
        )

    status = _status(caught.value)
    assert (caught.value.status, status["reason"]) == (422, "Invalid")
    assert message in str(status["message"])
    assert _hpa_stored(kube_server) == before
    assert kube_server.resource_version == before["metadata"]["resourceVersion"]


async def test_invalid_create_is_422(kube_server: KubeDouble, kube_api: client.ApiClient) -> None:
    body = make_hpa(NS, "llm", 5, 3)
    with pytest.raises(ApiException) as caught:
        await client.AutoscalingV2Api(kube_api).create_namespaced_horizontal_pod_autoscaler(
            NS, body
        )
    assert caught.value.status == 422
    assert kube_server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", NS, "llm") is None
    with pytest.raises(ApiError, match='ConfigMap "x" is invalid'):
        kube_server.put_object({**make_configmap(NS, "x"), "bogus": True})


async def test_create_resets_hpa_status_and_update_keeps_it(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    api = client.AutoscalingV2Api(kube_api)
    created = await api.create_namespaced_horizontal_pod_autoscaler(
        NS, make_hpa(NS, "llm", 1, 4, current_replicas=3)
    )
    assert created.status.current_replicas is None and created.status.desired_replicas == 0
    patched = await api.patch_namespaced_horizontal_pod_autoscaler_status(
        "llm", NS, {"status": {"currentReplicas": 2, "desiredReplicas": 2}}, _content_type=MERGE
    )
    assert patched.status.current_replicas == 2
    replaced = await api.replace_namespaced_horizontal_pod_autoscaler(
        "llm", NS, make_hpa(NS, "llm", 2, 4)
    )
    assert replaced.status.current_replicas == 2 and replaced.spec.min_replicas == 2


async def test_events_and_leases_are_validated_and_stored(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    core_event = {
        "metadata": {"name": "llm.1", "namespace": NS},
        "involvedObject": {"kind": "HorizontalPodAutoscaler", "name": "llm", "namespace": NS},
        "reason": "MinReplicasRaised",
        "message": "hello",
        "type": "Normal",
        "firstTimestamp": "2025-01-02T03:04:05Z",
        "count": 1,
    }
    await client.CoreV1Api(kube_api).create_namespaced_event(NS, core_event)
    events_api = client.EventsV1Api(kube_api)
    await events_api.create_namespaced_event(
        NS,
        {
            "metadata": {"name": "llm.2", "namespace": NS},
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": "predictive-scaler.io/controller",
            "reportingInstance": "pod-1",
            "action": "Scale",
            "reason": "MinReplicasRaised",
            "regarding": {"kind": "HorizontalPodAutoscaler", "name": "llm", "namespace": NS},
        },
    )
    listed = await events_api.list_namespaced_event(NS)
    assert [e.metadata.name for e in listed.items] == ["llm.2"]
    assert [e["metadata"]["name"] for e in kube_server.list_events(NS)] == ["llm.1", "llm.2"]

    with pytest.raises(ApiException) as caught:  # events.k8s.io/v1 needs eventTime etc.
        await events_api.create_namespaced_event(NS, {"metadata": {"name": "bad"}, "reason": "X"})
    assert caught.value.status == 422

    leases = client.CoordinationV1Api(kube_api)
    lease = await leases.create_namespaced_lease(
        NS,
        {
            "metadata": {"name": "leader"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    with pytest.raises(ApiException) as caught:
        await leases.patch_namespaced_lease(
            "leader", NS, {"spec": {"leaseDurationSeconds": 0}}, _content_type=MERGE
        )
    assert caught.value.status == 422
    await leases.delete_namespaced_lease("leader", NS)
    with pytest.raises(ApiException) as caught:
        await leases.read_namespaced_lease(lease.metadata.name, NS)
    assert caught.value.status == 404


# ---------------------------------------------------------------- watches


async def test_watch_receives_modified_after_patch(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 8))
    kube_server.put_object(make_hpa(NS, "unrelated", 1, 3))
    api = client.AutoscalingV2Api(kube_api)
    seen: list[tuple[str, str, int]] = []

    async with watch.Watch() as stream:
        async for event in stream.stream(
            api.list_namespaced_horizontal_pod_autoscaler,
            NS,
            field_selector="metadata.name=llm",
            timeout_seconds=30,
        ):
            obj = event["object"]
            seen.append((event["type"], obj.metadata.name, obj.spec.min_replicas))
            if event["type"] == "ADDED":  # the watch is open: now change the object
                kube_server.put_object(make_hpa(NS, "unrelated", 2, 3))
                await api.patch_namespaced_horizontal_pod_autoscaler(
                    "llm", NS, {"spec": {"minReplicas": 4}}, _content_type=MERGE
                )
            else:
                stream.stop()
                break

    assert seen == [("ADDED", "llm", 2), ("MODIFIED", "llm", 4)]
    await kube_server.wait_for_no_watches()  # the server noticed the client leave


async def test_watch_from_resource_version_replays_later_events(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    created = await core.create_namespaced_config_map(NS, make_configmap(NS, "cfg", {"v": "1"}))
    await core.patch_namespaced_config_map("cfg", NS, {"data": {"v": "2"}}, _content_type=MERGE)
    await core.delete_namespaced_config_map("cfg", NS)

    events: list[tuple[str, dict[str, str]]] = []
    async with watch.Watch() as stream:
        async for event in stream.stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=created.metadata.resource_version,
            timeout_seconds=30,
        ):
            events.append((event["type"], event["object"].data))
            if len(events) == 2:
                break
    assert events == [("MODIFIED", {"v": "2"}), ("DELETED", {"v": "2"})]


async def test_drop_watches_ends_open_streams(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)

    async def consume() -> list[str]:
        async with watch.Watch() as stream:
            return [
                e["type"]
                async for e in stream.stream(
                    core.list_namespaced_config_map, NS, timeout_seconds=60
                )
            ]

    task = asyncio.create_task(consume())
    await kube_server.wait_for_watches(1)
    kube_server.put_object(make_configmap(NS, "cfg"))
    assert kube_server.drop_watches() == 1
    assert await asyncio.wait_for(task, 5) == ["ADDED"]
    assert kube_server.open_watches == 0


async def test_watch_from_compacted_version_is_410(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    old = kube_server.put_object(make_configmap(NS, "cfg"))["metadata"]["resourceVersion"]
    kube_server.put_object(make_configmap(NS, "cfg", {"a": "b"}))
    kube_server.compact()
    core = client.CoreV1Api(kube_api)
    with pytest.raises(ApiException) as caught:
        async with watch.Watch() as stream:
            async for _ in stream.stream(
                core.list_namespaced_config_map, NS, resource_version=old, timeout_seconds=5
            ):
                pass
    assert caught.value.status == 410


# ---------------------------------------------------------------- RBAC


CONTROLLER_RULES = [
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch"],
        "resourceNames": ["predictive-scaler"],
    },
]


@pytest.mark.parametrize("kube_rbac_rules", [CONTROLLER_RULES])
async def test_rbac_forbids_verbs_not_granted(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 8))
    kube_server.put_object(make_configmap(NS, "predictive-scaler"))
    kube_server.put_object(make_configmap(NS, "secret-ish"))
    hpas = client.AutoscalingV2Api(kube_api)
    core = client.CoreV1Api(kube_api)

    await hpas.read_namespaced_horizontal_pod_autoscaler("llm", NS)
    await hpas.patch_namespaced_horizontal_pod_autoscaler(
        "llm", NS, {"spec": {"minReplicas": 3}}, _content_type=MERGE
    )
    await core.read_namespaced_config_map("predictive-scaler", NS)
    await core.list_namespaced_config_map(NS, field_selector="metadata.name=predictive-scaler")

    denied = [
        hpas.replace_namespaced_horizontal_pod_autoscaler("llm", NS, make_hpa(NS, "llm", 2, 8)),
        hpas.delete_namespaced_horizontal_pod_autoscaler("llm", NS),
        core.read_namespaced_config_map("secret-ish", NS),
        core.list_namespaced_config_map(NS),
    ]
    for call in denied:
        with pytest.raises(ApiException) as caught:
            await call
        assert caught.value.status == 403
        assert _status(caught.value)["reason"] == "Forbidden"
    assert (
        "cannot update resource"
        in _status(
            await _error(
                hpas.replace_namespaced_horizontal_pod_autoscaler(
                    "llm", NS, make_hpa(NS, "llm", 2, 8)
                )
            )
        )["message"]
    )

    used = kube_server.used_permissions()
    assert set(used) == {
        ("autoscaling", "horizontalpodautoscalers", "get"),
        ("autoscaling", "horizontalpodautoscalers", "patch"),
        ("", "configmaps", "get"),
        ("", "configmaps", "list"),
    }
    assert kube_server.unused_permissions() == {
        ("autoscaling", "horizontalpodautoscalers", "list"),
        ("autoscaling", "horizontalpodautoscalers", "watch"),
        ("", "configmaps", "watch"),
        ("", "events", "create"),
    }


async def _error(call: object) -> ApiException:
    try:
        await call  # type: ignore[misc]
    except ApiException as error:
        return error
    raise AssertionError("expected an ApiException")


@pytest.mark.parametrize("kube_rbac_rules", [CONTROLLER_RULES])
async def test_unknown_token_is_401(kube_server: KubeDouble) -> None:
    async with make_api_client(kube_server.url, "wrong") as api_client:
        error = await _error(client.CoreV1Api(api_client).list_namespaced_config_map(NS))
    assert error.status == 401


# ---------------------------------------------------------------- fault injection


async def test_fail_next_answers_injected_status_then_recovers(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 8))
    api = client.AutoscalingV2Api(kube_api)
    fault = kube_server.fail_next(
        "PATCH", r"/horizontalpodautoscalers/llm$", 429, times=2, headers={"Retry-After": "1"}
    )

    for _ in range(2):
        error = await _error(
            api.patch_namespaced_horizontal_pod_autoscaler(
                "llm", NS, {"spec": {"minReplicas": 3}}, _content_type=MERGE
            )
        )
        assert error.status == 429
        assert error.headers["Retry-After"] == "1"
        assert _status(error)["reason"] == "TooManyRequests"
    assert fault.remaining == 0
    await api.read_namespaced_horizontal_pod_autoscaler("llm", NS)  # other methods unaffected
    patched = await api.patch_namespaced_horizontal_pod_autoscaler(
        "llm", NS, {"spec": {"minReplicas": 3}}, _content_type=MERGE
    )
    assert patched.spec.min_replicas == 3


async def test_kubeconfig_points_a_client_at_the_double(
    kube_server: KubeDouble, tmp_path: object
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    path = write_kubeconfig(tmp_path / "config", kube_server.url, DEFAULT_TOKEN)
    kube_server.put_object(make_configmap("default", "cfg", {"a": "b"}))
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(path), client_configuration=configuration, persist_config=False
    )
    async with client.ApiClient(configuration) as api_client:
        cm = await client.CoreV1Api(api_client).read_namespaced_config_map("cfg", "default")
    assert cm.data == {"a": "b"}
