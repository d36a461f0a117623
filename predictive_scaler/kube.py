"""Kubernetes adapter: HPAs, ConfigMaps, Events and the Lease API calls.

With :mod:`predictive_scaler.kube_connect` (which builds the ``ApiClient``), the only module
of the product that imports ``kubernetes_asyncio``. Everything above it sees
plain values (:class:`HpaSnapshot`, dicts of strings) and typed errors (:class:`KubeApiError`
and subclasses), both defined in :mod:`predictive_scaler.values`; nothing here decides
anything. Every request has a finite timeout, and every write to an HPA is one JSON merge
patch guarded by ``metadata.resourceVersion``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

# The annotation names live with their (de)serialisation; re-exported for the adapter's users.
from predictive_scaler.annotations import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_PREFIX,
    ANNOTATION_REASON,
    ANNOTATION_UPDATED_AT,
)

# Connecting is its own module; re-exported for the adapter's users.
from predictive_scaler.kube_connect import DEFAULT_REQUEST_TIMEOUT_SECONDS, load_api_client

# The values live in their own pure module; re-exported for the adapter's users.
from predictive_scaler.values import (
    ConfigMapEvent,
    ConflictError,
    ForbiddenError,
    HpaList,
    HpaSnapshot,
    HpaWatchEvent,
    KubeApiError,
    KubeUnavailableError,
    NotFoundError,
    ObjectRef,
    parse_quantity,
)

__all__ = [
    "ANNOTATION_APPLIED_MIN_REPLICAS",
    "ANNOTATION_BASE_MIN_REPLICAS",
    "ANNOTATION_LAST_FORECAST",
    "ANNOTATION_MODEL",
    "ANNOTATION_PREFIX",
    "ANNOTATION_REASON",
    "ANNOTATION_UPDATED_AT",
    "EVENT_COMPONENT",
    "MERGE_PATCH",
    "ConfigMapEvent",
    "ConflictError",
    "ForbiddenError",
    "HpaList",
    "HpaSnapshot",
    "HpaWatchEvent",
    "KubeApiError",
    "KubeClient",
    "KubeUnavailableError",
    "NotFoundError",
    "ObjectRef",
    "load_api_client",
    "parse_quantity",
]


#: ``source.component`` / ``reportingComponent`` of the Events we emit.
EVENT_COMPONENT: Final = "predictive-scaler"
MERGE_PATCH: Final = "application/merge-patch+json"

#: Server-side timeout of one watch request; the client re-watches after it.
DEFAULT_WATCH_TIMEOUT_SECONDS: Final = 300
#: Delays between attempts to re-establish a failing watch; the last one repeats.
DEFAULT_WATCH_BACKOFF_SECONDS: Final = (0.5, 1.0, 2.0, 5.0, 10.0)


# ---------------------------------------------------------------------------- errors


def _error_from_api_exception(error: ApiException) -> KubeApiError:
    return _error_from_response(error.status, error.reason, error.body, error.headers)


def _error_from_response(
    status_code: int | None,
    http_reason: str | None,
    raw_body: object,
    headers: Mapping[str, str] | None,
) -> KubeApiError:
    status = int(status_code or 0)
    message = str(http_reason or "")
    reason = ""
    body = raw_body.decode("utf-8", "replace") if isinstance(raw_body, bytes) else raw_body
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or message)
            reason = str(parsed.get("reason") or "")
    retry_after: float | None = None
    header_map: Mapping[str, str] = headers or {}
    if "Retry-After" in header_map:
        try:
            retry_after = float(header_map["Retry-After"])
        except (TypeError, ValueError):
            retry_after = None
    cls: type[KubeApiError] = {409: ConflictError, 404: NotFoundError, 403: ForbiddenError}.get(
        status, KubeApiError
    )
    return cls(status, message, reason=reason, retry_after_seconds=retry_after)


_T = TypeVar("_T")


_SCALE_READERS: Final = {
    ("apps/v1", "Deployment"): "read_namespaced_deployment_scale",
    ("apps/v1", "StatefulSet"): "read_namespaced_stateful_set_scale",
    ("apps/v1", "ReplicaSet"): "read_namespaced_replica_set_scale",
}
"""Client calls that read the scale subresource of the workloads an HPA can target."""


async def _call(request: Awaitable[_T]) -> _T:
    """Await one client call, translating its failures into :class:`KubeApiError`."""
    try:
        return await request
    except ApiException as error:
        raise _error_from_api_exception(error) from error
    except (aiohttp.ClientError, TimeoutError) as error:
        raise KubeUnavailableError(0, f"{type(error).__name__}: {error}") from error


async def _call_raw(request: Awaitable[Any]) -> dict[str, Any]:
    """Await one client call made with ``_preload_content=False`` and return its JSON body as
    a dict. The client's own models are skipped on purpose: turning a response into them
    and back (every timestamp through dateutil) cost about a millisecond per write, most
    of a steady cycle's CPU at a thousand targets. Failures as :func:`_call`."""
    try:
        response = await request
        async with response:
            body = await response.read()
            if not 200 <= response.status <= 299:
                raise _error_from_response(response.status, response.reason, body, response.headers)
    except ApiException as error:
        raise _error_from_api_exception(error) from error
    except (aiohttp.ClientError, TimeoutError) as error:
        raise KubeUnavailableError(0, f"{type(error).__name__}: {error}") from error
    try:
        data = json.loads(body)
    except ValueError as error:
        raise KubeApiError(0, f"unreadable response: {error}") from error
    if not isinstance(data, dict):
        raise KubeApiError(0, f"unexpected response {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------- time


def _rfc3339(moment: datetime) -> str:
    _require_aware(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware datetime")


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------- client


class KubeClient:
    """The few Kubernetes calls the controller makes, over a caller-owned ``ApiClient``."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        reporting_instance: str | None = None,
    ) -> None:
        self.api_client = api_client
        self.request_timeout_seconds = request_timeout_seconds
        self.reporting_instance = reporting_instance or os.environ.get("HOSTNAME") or "local"
        # Typed as Any: the client's stubs lack ``_content_type`` and want models where the
        # runtime accepts plain dicts (which keep unknown fields out of our way).
        self._autoscaling: Any = client.AutoscalingV2Api(api_client)
        self._core: Any = client.CoreV1Api(api_client)
        self._coordination: Any = client.CoordinationV1Api(api_client)

    def _json(self, model: Any) -> dict[str, Any]:
        data = self.api_client.sanitize_for_serialization(model)
        if not isinstance(data, dict):
            raise KubeApiError(0, f"unexpected response {type(model).__name__}")
        return data

    # --- HPAs

    async def read_scale_selector(self, namespace: str, ref: Mapping[str, str]) -> str | None:
        """The pod selector of an HPA's scale target, as the HPA controller finds its pods: the
        ``status.selector`` of the target's ``scale`` subresource (e.g. ``app=nim``).

        ``None`` when the target's kind has no scale subresource we read (only the apps/v1
        workloads) or its scale reports no selector; :class:`KubeApiError` on failure."""
        reader = _SCALE_READERS.get((ref.get("apiVersion", ""), ref.get("kind", "")))
        name = ref.get("name")
        if reader is None or not name:
            return None
        apps: Any = client.AppsV1Api(self.api_client)
        scale = await _call(
            getattr(apps, reader)(name, namespace, _request_timeout=self.request_timeout_seconds)
        )
        selector = (self._json(scale).get("status") or {}).get("selector")
        return str(selector) if selector else None

    async def read_hpa(self, namespace: str, name: str) -> HpaSnapshot:
        hpa = await _call(
            self._autoscaling.read_namespaced_horizontal_pod_autoscaler(
                name, namespace, _request_timeout=self.request_timeout_seconds
            )
        )
        return HpaSnapshot.from_dict(self._json(hpa))

    async def list_hpas(self, namespace: str | None = None) -> list[HpaSnapshot]:
        """Every HPA in ``namespace`` (all namespaces when ``None``)."""
        return (await self.list_hpas_versioned(namespace)).items

    async def list_hpas_versioned(self, namespace: str | None = None) -> HpaList:
        """Every HPA in ``namespace`` (all namespaces when ``None``) and the list's
        resourceVersion, the point a watch continues from (the informer's list)."""
        if namespace is None:
            request = self._autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces(
                _request_timeout=self.request_timeout_seconds
            )
        else:
            request = self._autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, _request_timeout=self.request_timeout_seconds
            )
        listed = self._json(await _call(request))
        return HpaList(
            [HpaSnapshot.from_dict(item) for item in listed.get("items") or ()],
            str((listed.get("metadata") or {}).get("resourceVersion", "")),
        )

    async def watch_hpas(
        self,
        namespace: str | None,
        resource_version: str,
        *,
        timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECONDS,
    ) -> AsyncIterator[HpaWatchEvent]:
        """ONE watch request of the HPAs in ``namespace`` (all when ``None``) from
        ``resource_version``: yields its events until the server ends it (its
        ``timeoutSeconds`` or a dropped connection: the iterator simply ends). Failures are
        raised typed, a 410 Gone (the version is too old: list again) included. Re-watching,
        re-listing and backing off are the caller's (:mod:`predictive_scaler.informer`)."""
        if namespace is None:
            func = self._autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces
            args: tuple[str, ...] = ()
        else:
            func = self._autoscaling.list_namespaced_horizontal_pod_autoscaler
            args = (namespace,)
        try:
            # return_type "object": the raw dict, not a model built and thrown away per event.
            async with watch.Watch(return_type="object") as stream:
                async for event in stream.stream(
                    func,
                    *args,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=timeout_seconds,
                    _request_timeout=(self.request_timeout_seconds, timeout_seconds + 30),
                ):
                    raw = event["raw_object"]
                    event_type = event["type"]
                    version = str((raw.get("metadata") or {}).get("resourceVersion", ""))
                    if event_type == "BOOKMARK":
                        yield HpaWatchEvent("BOOKMARK", None, version)
                    elif event_type in {"ADDED", "MODIFIED", "DELETED"}:
                        yield HpaWatchEvent(event_type, HpaSnapshot.from_dict(raw), version)
        except ApiException as error:  # an error response, or an ERROR event in the stream
            raise _error_from_api_exception(error) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeUnavailableError(0, f"{type(error).__name__}: {error}") from error

    async def _merge_patch_hpa(self, snapshot: HpaSnapshot, body: dict[str, Any]) -> HpaSnapshot:
        body.setdefault("metadata", {})["resourceVersion"] = snapshot.resource_version
        hpa = await _call_raw(
            self._autoscaling.patch_namespaced_horizontal_pod_autoscaler(
                snapshot.name,
                snapshot.namespace,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=self.request_timeout_seconds,
                _preload_content=False,
            )
        )
        return HpaSnapshot.from_dict(hpa)

    async def patch_hpa_min_replicas(
        self, snapshot: HpaSnapshot, min_replicas: int, annotations: Mapping[str, str | None]
    ) -> HpaSnapshot:
        """Set ``spec.minReplicas`` and annotations (``None`` removes one) in ONE merge patch
        guarded by ``snapshot.resource_version``: :class:`ConflictError` when the HPA changed
        since ``snapshot`` was read. Never sends maxReplicas, metrics or behavior."""
        if min_replicas < 1:
            raise ValueError(f"minReplicas must be >= 1, got {min_replicas}")
        body: dict[str, Any] = {"spec": {"minReplicas": int(min_replicas)}}
        if annotations:
            body["metadata"] = {"annotations": dict(annotations)}
        return await self._merge_patch_hpa(snapshot, body)

    # --- Events

    async def create_event(
        self,
        involved: HpaSnapshot | ObjectRef,
        reason: str,
        message: str,
        *,
        now: datetime,
        type_: Literal["Normal", "Warning"] = "Normal",
    ) -> str:
        """Create a core/v1 Event about ``involved`` (``kubectl describe`` shows it); returns
        the Event's name, ``<object>.<hex>``."""
        ref = involved.ref if isinstance(involved, HpaSnapshot) else involved
        timestamp = _rfc3339(now)
        involved_object: dict[str, Any] = {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "name": ref.name,
            "namespace": ref.namespace,
        }
        if ref.uid:
            involved_object["uid"] = ref.uid
        name = f"{ref.name}.{uuid.uuid4().hex[:16]}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ref.namespace},
            "involvedObject": involved_object,
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": self.reporting_instance,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
        }
        await _call_raw(
            self._core.create_namespaced_event(
                ref.namespace,
                body,
                _request_timeout=self.request_timeout_seconds,
                _preload_content=False,
            )
        )
        return name

    # --- ConfigMaps

    async def read_configmap(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        """``(data, resourceVersion)`` of a ConfigMap; :class:`NotFoundError` when absent."""
        configmap = await _call(
            self._core.read_namespaced_config_map(
                name, namespace, _request_timeout=self.request_timeout_seconds
            )
        )
        raw = self._json(configmap)
        return (
            {str(k): str(v) for k, v in (raw.get("data") or {}).items()},
            str((raw.get("metadata") or {}).get("resourceVersion", "")),
        )

    async def watch_configmap(
        self,
        namespace: str,
        name: str,
        *,
        watch_timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECONDS,
        backoff_seconds: Sequence[float] = DEFAULT_WATCH_BACKOFF_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_restart: Callable[[str], None] | None = None,
    ) -> AsyncIterator[ConfigMapEvent]:
        """Yield the ConfigMap's current state first (``DELETED`` when it is absent), then
        every change. Dropped or expired watches are re-established from the last seen
        resourceVersion (a 410 Gone re-lists); failures back off through ``backoff_seconds``
        (the last delay repeats). 401/403 are raised: the caller decides whether to retry
        (:mod:`predictive_scaler.config_watch` does, with its own backoff).

        ``on_restart`` hears why each watch request ended before the next one: ``closed``
        (the server ended it, e.g. its timeout), ``expired`` (410 Gone: re-list),
        ``disconnected`` (no answer, connection reset) or ``error`` (any other status)."""
        selector = f"metadata.name={name}"
        resource_version: str | None = None
        failures = 0

        def restarted(reason: str) -> None:
            if on_restart is not None:
                on_restart(reason)

        while True:
            try:
                if resource_version is None:
                    listed = self._json(
                        await _call(
                            self._core.list_namespaced_config_map(
                                namespace,
                                field_selector=selector,
                                _request_timeout=self.request_timeout_seconds,
                            )
                        )
                    )
                    resource_version = str(listed["metadata"]["resourceVersion"])
                    items = listed.get("items") or []
                    if items:
                        item = items[0]
                        yield ConfigMapEvent(
                            "ADDED",
                            {str(k): str(v) for k, v in (item.get("data") or {}).items()},
                            str(item["metadata"]["resourceVersion"]),
                        )
                    else:
                        yield ConfigMapEvent("DELETED", {}, resource_version)
                started = time.monotonic()
                received = 0
                async with watch.Watch() as stream:
                    async for event in stream.stream(
                        self._core.list_namespaced_config_map,
                        namespace,
                        field_selector=selector,
                        resource_version=resource_version,
                        timeout_seconds=watch_timeout_seconds,
                        _request_timeout=(self.request_timeout_seconds, watch_timeout_seconds + 30),
                    ):
                        raw = event["raw_object"]
                        event_type = event["type"]
                        if event_type not in {"ADDED", "MODIFIED", "DELETED"}:
                            continue  # BOOKMARK
                        received += 1
                        failures = 0
                        resource_version = str(raw["metadata"]["resourceVersion"])
                        data = {} if event_type == "DELETED" else raw.get("data") or {}
                        yield ConfigMapEvent(
                            event_type,
                            {str(k): str(v) for k, v in data.items()},
                            resource_version,
                        )
                restarted("closed")
                if received == 0 and time.monotonic() - started < 1.0:
                    failures += 1  # ended at once without news: do not spin
                    await sleep(backoff_seconds[min(failures, len(backoff_seconds)) - 1])
            except ApiException as error:  # raised by the watch stream itself
                mapped = _error_from_api_exception(error)
                if mapped.status == 410:
                    restarted("expired")
                    resource_version = None
                    continue
                if mapped.status not in {401, 403}:
                    restarted("disconnected" if mapped.status == 0 else "error")
                failures = await self._watch_failed(mapped, failures, backoff_seconds, sleep)
            except KubeApiError as error:
                if error.status == 410:
                    restarted("expired")
                    resource_version = None
                    continue
                if error.status not in {401, 403}:
                    restarted("disconnected" if error.status == 0 else "error")
                failures = await self._watch_failed(error, failures, backoff_seconds, sleep)
            except (aiohttp.ClientError, TimeoutError) as error:
                restarted("disconnected")
                unavailable = KubeUnavailableError(0, f"{type(error).__name__}: {error}")
                failures = await self._watch_failed(unavailable, failures, backoff_seconds, sleep)

    @staticmethod
    async def _watch_failed(
        error: KubeApiError,
        failures: int,
        backoff_seconds: Sequence[float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> int:
        if error.status in {401, 403}:
            raise error
        failures += 1
        delay = backoff_seconds[min(failures, len(backoff_seconds)) - 1] if backoff_seconds else 0
        if error.retry_after_seconds is not None:
            delay = max(delay, error.retry_after_seconds)
        await sleep(delay)
        return failures

    # --- delegated authentication and authorization (the External Metrics API server)

    async def create_token_review(self, token: str) -> dict[str, Any]:
        """The ``status`` of an ``authentication.k8s.io/v1`` TokenReview of ``token``: who the
        API server says its bearer is (``authenticated``, ``user``), as delegated
        authentication asks (RBAC: create tokenreviews, in ``system:auth-delegator``)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        api: Any = client.AuthenticationV1Api(self.api_client)
        review = await _call(
            api.create_token_review(body, _request_timeout=self.request_timeout_seconds)
        )
        status = self._json(review).get("status") or {}
        return dict(status) if isinstance(status, Mapping) else {}

    async def create_subject_access_review(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The ``status`` of an ``authorization.k8s.io/v1`` SubjectAccessReview of ``spec``
        (``allowed``, ``denied``, ``reason``): whether the user may make a request, by the
        cluster's own authorizers (RBAC: create subjectaccessreviews, in
        ``system:auth-delegator``)."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": dict(spec),
        }
        api: Any = client.AuthorizationV1Api(self.api_client)
        review = await _call(
            api.create_subject_access_review(body, _request_timeout=self.request_timeout_seconds)
        )
        status = self._json(review).get("status") or {}
        return dict(status) if isinstance(status, Mapping) else {}

    async def read_extension_apiserver_authentication(self) -> dict[str, str]:
        """The data of ``kube-system/extension-apiserver-authentication``, where the API server
        publishes its front-proxy CA and request headers (RBAC: get on that ConfigMap, in
        ``extension-apiserver-authentication-reader``); :class:`NotFoundError` when absent."""
        data, _ = await self.read_configmap("kube-system", "extension-apiserver-authentication")
        return data

    # --- Leases

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any]:
        lease = await _call(
            self._coordination.read_namespaced_lease(
                name, namespace, _request_timeout=self.request_timeout_seconds
            )
        )
        return self._json(lease)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        lease = await _call(
            self._coordination.create_namespaced_lease(
                namespace, body, _request_timeout=self.request_timeout_seconds
            )
        )
        return self._json(lease)

    async def replace_lease(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT guarded by ``body.metadata.resourceVersion``: :class:`ConflictError` if stale."""
        lease = await _call(
            self._coordination.replace_namespaced_lease(
                name, namespace, body, _request_timeout=self.request_timeout_seconds
            )
        )
        return self._json(lease)
