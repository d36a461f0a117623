"""pytest fixtures: a started API server double and a real kubernetes_asyncio client for it.

Registered in ``tests/conftest.py`` through ``pytest_plugins``. Override ``kube_rbac_rules``
in a test module (or parametrize it indirectly) to run with RBAC enforced; it may return
namespace-scoped rules or ``tests.deploy_support.Grant`` objects (see ``KubeDouble``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from kubernetes_asyncio import client

from .rbac import PolicyRule
from .server import DEFAULT_TOKEN, KubeDouble


def make_api_client(url: str, token: str = DEFAULT_TOKEN) -> client.ApiClient:
    """A real ApiClient for the double (plain HTTP, bearer token). Close it when done."""
    configuration = client.Configuration(host=url)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(configuration=configuration)


@pytest.fixture
def kube_rbac_rules() -> Sequence[PolicyRule] | None:
    """RBAC rules for the default token; ``None`` (the default) allows everything."""
    return None


@pytest.fixture
async def kube_server(kube_rbac_rules: Sequence[PolicyRule] | None) -> AsyncIterator[KubeDouble]:
    double = KubeDouble(rules=kube_rbac_rules)
    await double.start()
    try:
        yield double
    finally:
        await double.close()


@pytest.fixture
async def kube_api(kube_server: KubeDouble) -> AsyncIterator[client.ApiClient]:
    api_client = make_api_client(kube_server.url, kube_server.token)
    try:
        yield api_client
    finally:
        await api_client.close()
