"""What the controller sends: every write to an HPA is a merge patch of spec.minReplicas and
annotations only (DESIGN: never touch maxReplicas, metrics or behavior), asserted on the
bodies the API double received, not on the stored object (a patch that resends an unchanged
maxReplicas leaves the object as it was, and would still fight a user who edits it)."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client

from predictive_scaler.kube import ANNOTATION_BASE_MIN_REPLICAS, ANNOTATION_REASON, KubeClient
from tests.kube_double import KubeDouble, make_hpa

NS = "inference"


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api)


def hpa_patch_bodies(server: KubeDouble) -> list[dict[str, object]]:
    return [
        json.loads(r.body or b"null")
        for r in server.requests
        if r.method == "PATCH" and "/horizontalpodautoscalers/" in r.path
    ]


async def test_min_replicas_patch_sends_min_replicas_and_annotations_only(
    kube_server: KubeDouble, kube: KubeClient
) -> None:
    kube_server.put_object(make_hpa(NS, "llm", 2, 12, current_replicas=2))
    snapshot = await kube.read_hpa(NS, "llm")

    await kube.patch_hpa_min_replicas(
        snapshot, 5, {ANNOTATION_BASE_MIN_REPLICAS: "2", ANNOTATION_REASON: None}
    )

    [body] = hpa_patch_bodies(kube_server)
    assert body == {
        "spec": {"minReplicas": 5},
        "metadata": {
            "annotations": {ANNOTATION_BASE_MIN_REPLICAS: "2", ANNOTATION_REASON: None},
            "resourceVersion": snapshot.resource_version,
        },
    }
