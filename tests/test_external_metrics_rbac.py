"""The external-metrics overlay's RBAC is enough for delegated auth, and no more than it uses.

The API double grants the controller's token exactly what the overlay binds to its
ServiceAccount (each Role's rules in their RoleBinding's namespace), and evaluates the HPA
controller's SubjectAccessReviews against exactly what the overlay binds to
``kube-system/horizontal-pod-autoscaler``. The built-in ``system:discovery`` binding (every
authenticated user may GET ``/apis/*``) is added as every cluster has it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from predictive_scaler.delegated_auth import DelegatedAuth
from predictive_scaler.external_metrics import METRIC_NAMES
from predictive_scaler.kube import KubeClient
from tests.deploy_support import load_rbac_grants, render
from tests.external_metrics_auth_support import (
    AGGREGATOR_CN,
    DISCOVERY,
    HPA_GROUPS,
    HPA_TOKEN,
    HPA_USER,
    authentication_configmap,
)
from tests.kube_double import KubeDouble
from tests.kube_double.rbac import PolicyRule, as_rule
from tests.test_external_metrics import BASE
from tests.test_external_metrics_auth import Clock, Pki, Setup, _started, pki  # noqa: F401

OVERLAY = "external-metrics"
AUTH_PERMISSIONS = {
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
    ("", "configmaps", "get"),
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
}


@pytest.fixture
def kube_rbac_rules() -> list[PolicyRule]:
    return [as_rule(grant) for grant in load_rbac_grants(objects=render(OVERLAY))]


@pytest.fixture
async def shipped(
    kube_server: KubeDouble,
    kube_api: client.ApiClient,
    pki: Pki,  # noqa: F811
) -> AsyncIterator[Setup]:
    hpa = load_rbac_grants(
        service_account=("kube-system", "horizontal-pod-autoscaler"), objects=render(OVERLAY)
    )
    kube_server.bind([as_rule(grant) for grant in hpa], user=HPA_USER)
    kube_server.bind([DISCOVERY], group="system:authenticated")
    kube_server.put_object(authentication_configmap(pki.front_proxy, [AGGREGATOR_CN]))
    kube_server.add_token(HPA_TOKEN, HPA_USER, HPA_GROUPS)
    server = await _started(kube_server, pki, DelegatedAuth(KubeClient(kube_api)))
    try:
        yield Setup(kube_server, server, Clock(), pki)
    finally:
        await server.close()


async def test_the_shipped_rbac_is_exactly_enough(shipped: Setup) -> None:
    double = shipped.double
    for metric in METRIC_NAMES:
        path = f"{BASE}/namespaces/nim/{metric}"
        assert (await shipped.get(path, token=HPA_TOKEN))[0] == 200, metric
        headers = {"X-Remote-User": HPA_USER, "X-Remote-Group": HPA_GROUPS[0]}
        assert (await shipped.get(path, cert=shipped.pki.aggregator, headers=headers))[0] == 200
    assert (await shipped.get(BASE, token=HPA_TOKEN))[0] == 200
    # The HPA controller gets list, nothing else: no get of a named value, no other group.
    named = f"{BASE}/namespaces/nim/{METRIC_NAMES[0]}/some-value"
    assert (await shipped.get(named, token=HPA_TOKEN))[0] == 403
    custom = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/nim/pods/*/x"
    assert (await shipped.get(custom, token=HPA_TOKEN))[0] == 403
    # The controller's own calls were all allowed...
    assert [r.path for r in double.requests if r.status not in {200, 201}] == []
    # ...and used every delegated-auth permission the overlay grants, except the list and
    # watch the built-in reader Role carries (the ConfigMap is read once, by GET).
    unused = double.unused_permissions() & AUTH_PERMISSIONS
    assert unused == {("", "configmaps", "list"), ("", "configmaps", "watch")}
