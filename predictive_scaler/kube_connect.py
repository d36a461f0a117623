"""Connecting to the Kubernetes API: an ``ApiClient`` from the in-cluster service account or a
kubeconfig, whose requests time out by default (the library's default is never).

With :mod:`predictive_scaler.kube` (the calls made over it), the only module of the product
that imports ``kubernetes_asyncio``.
"""

from __future__ import annotations

import os
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.config import incluster_config, kube_config

__all__ = ["DEFAULT_REQUEST_TIMEOUT_SECONDS", "load_api_client"]

#: Default per-request timeout (seconds) for everything but watches.
DEFAULT_REQUEST_TIMEOUT_SECONDS: Final = 10.0


class _TimeoutApiClient(client.ApiClient):
    """An ApiClient whose requests time out by default (the library's default is never)."""

    def __init__(self, configuration: client.Configuration, timeout_seconds: float) -> None:
        super().__init__(configuration=configuration)
        self._default_timeout_seconds = timeout_seconds

    def request(
        self,
        method: Any,
        url: Any,
        query_params: Any | None = None,
        headers: dict[str, Any] | None = None,
        post_params: dict[str, Any] | None = None,
        body: Any | None = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        timeout = self._default_timeout_seconds if _request_timeout is None else _request_timeout
        return super().request(
            method,
            url,
            query_params=query_params,
            headers=headers,
            post_params=post_params,
            body=body,
            _preload_content=_preload_content,
            _request_timeout=timeout,
        )


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        incluster_config.SERVICE_TOKEN_FILENAME
    )


async def load_api_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
) -> client.ApiClient:
    """An ApiClient from the in-cluster service account when no kubeconfig is given and we run
    in a pod, else from ``kubeconfig`` (default ``~/.kube/config``, or ``$KUBECONFIG``) and
    ``context``. Requests without their own timeout get ``request_timeout_seconds``. The caller
    closes it."""
    configuration = client.Configuration()
    if kubeconfig is None and context is None and _in_cluster():
        incluster_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    else:
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        await kube_config.load_kube_config(
            config_file=path,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    return _TimeoutApiClient(configuration, request_timeout_seconds)
