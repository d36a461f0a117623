"""An in-process Kubernetes API server double on aiohttp.

It serves the few resources the controller uses with the rules of the real API server that
matter to a client: a global resourceVersion, optimistic concurrency (409), merge / JSON /
strategic patches, strict OpenAPI validation plus server-side rules (422), watches, RBAC (403)
and ``Status`` error bodies; and the TokenReview / SubjectAccessReview an aggregated API server
delegates its authentication and authorization with (``reviews``). Tests drive it through the
real ``kubernetes_asyncio`` client and inspect or change it directly through the store helpers
and fault-injection hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from .patching import PatchError, apply_json_patch, apply_merge_patch
from .rbac import (
    PolicyRule,
    RequestAttributes,
    RequestRecord,
    as_rule,
    forbidden_message,
    granted_permissions,
    rules_allow,
)
from .resources import (
    CORE_EVENT,
    EVENTS_V1_EVENT,
    RESOURCE_TYPES,
    ParsedPath,
    ResourceType,
    by_kind,
    parse_path,
)
from .reviews import ReviewError, review_attributes, subject_access_review, token_review
from .validation import KUBERNETES_VERSION, InvalidObject, validate_object

DEFAULT_TOKEN = "predictive-scaler-test-token"
DEFAULT_USER = "system:serviceaccount:predictive-scaler:predictive-scaler"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

Obj = dict[str, Any]
Key = tuple[ResourceType, str, str]


class ApiError(Exception):
    """Answered as a ``Status`` object with ``code`` and ``reason``."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = dict(details) if details else None
        self.headers = dict(headers) if headers else {}

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    def response(self) -> web.Response:
        return web.json_response(self.status(), status=self.code, headers=self.headers)


def _details(rt: ResourceType, name: str | None, **extra: Any) -> Obj:
    details: Obj = {"group": rt.group, "kind": rt.plural, **extra}
    if name:
        details["name"] = name
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.group_resource} "{name}" not found', details=_details(rt, name))


def conflict(rt: ResourceType, name: str, message: str | None = None) -> ApiError:
    message = message or (
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    return ApiError(409, message, details=_details(rt, name))


@dataclass
class InjectedFault:
    """One armed ``fail_next`` rule; ``remaining`` counts down as requests hit it."""

    method: str
    path_regex: re.Pattern[str]
    status: int
    remaining: int
    headers: Mapping[str, str]
    message: str
    reason: str | None

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and self.method in {"*", method}
            and self.path_regex.search(path) is not None
        )


@dataclass
class _Watcher:
    resource: ResourceType
    namespace: str | None
    selector: Callable[[Obj], bool]
    queue: asyncio.Queue[Obj | str] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True)
class _HistoryEntry:
    resource_version: int
    resource: ResourceType
    event_type: str
    obj: Obj


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body_without_meta(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in {"metadata", "status"}}


def _parse_selector(raw: str | None, *, fields: bool) -> list[tuple[str, str, str]]:
    """``a=b,c!=d,e`` into ``(key, op, value)``; ``op`` is ``=``, ``!=`` or ``exists``."""
    terms: list[tuple[str, str, str]] = []
    for raw_term in (raw or "").split(","):
        term = raw_term.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.split("=", 1)
            terms.append((key.strip(), "=", value.lstrip("=").strip()))
        elif fields:
            raise ApiError(400, f"invalid field selector: {term!r}")
        else:
            terms.append((term, "exists", ""))
    if fields:
        for key, _, _ in terms:
            if key not in {"metadata.name", "metadata.namespace"}:
                raise ApiError(400, f'field label not supported: "{key}"')
    return terms


def _selector(label_selector: str | None, field_selector: str | None) -> Callable[[Obj], bool]:
    labels = _parse_selector(label_selector, fields=False)
    fields = _parse_selector(field_selector, fields=True)

    def matches(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        obj_labels = meta.get("labels") or {}
        for key, op, value in labels:
            if op == "exists" and key not in obj_labels:
                return False
            if op == "=" and obj_labels.get(key) != value:
                return False
            if op == "!=" and obj_labels.get(key) == value:
                return False
        for key, op, value in fields:
            actual = meta.get(key.split(".", 1)[1], "")
            if (actual == value) != (op == "="):
                return False
        return True

    return matches


def _exact_name(field_selector: str | None) -> str | None:
    for key, op, value in _parse_selector(field_selector, fields=True):
        if key == "metadata.name" and op == "=":
            return value
    return None


class KubeDouble:
    """A small Kubernetes API server, in process, for tests.

    ``rules`` switch RBAC on for the identity whose bearer token is ``token``; without rules
    every request is allowed. More identities: :meth:`grant`. A rule is a PolicyRule dict,
    cluster-wide, or confined to one namespace by an extra key ``namespace`` (a Role's rule
    bound by a RoleBinding); ``Grant`` objects of ``tests.deploy_support.load_rbac_grants()``
    are taken as they are (see ``rbac``).
    """

    def __init__(
        self,
        *,
        rules: Sequence[PolicyRule | Any] | None = None,
        token: str = DEFAULT_TOKEN,
        user: str = DEFAULT_USER,
        kubernetes_version: str = KUBERNETES_VERSION,
    ) -> None:
        self.token = token
        self.kubernetes_version = kubernetes_version
        self._identities: dict[str, tuple[str, list[PolicyRule]]] = {}
        # TokenReview: token -> (user, groups); SubjectAccessReview: rules bound to a user or a
        # group (``bind``), besides the rules of each token's identity.
        self._token_users: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._bindings: list[tuple[str, str, list[PolicyRule]]] = []
        self._rbac = rules is not None
        if rules is not None:
            self.grant(token, rules, user=user)
        self._default_user = user
        self._objects: dict[Key, Obj] = {}
        self._resource_version = 1000
        self._compacted_before = 0
        self._history: list[_HistoryEntry] = []
        self._watchers: list[_Watcher] = []
        self._watch_changed = asyncio.Condition()
        self._faults: list[InjectedFault] = []
        self.requests: list[RequestRecord] = []
        self._server: TestServer | None = None
        self.app = web.Application(client_max_size=8 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        """Listen on a free loopback port; returns the base URL (no trailing slash)."""
        if self._server is None:
            # handler_cancellation: a watch whose client went away is closed and forgotten
            self._server = TestServer(self.app, host="127.0.0.1", handler_cancellation=True)
            await self._server.start_server()
        return self.url

    async def close(self) -> None:
        """Drop open watches and stop listening; safe to call twice."""
        self.drop_watches()
        if self._server is not None:
            server, self._server = self._server, None
            await server.close()

    async def __aenter__(self) -> KubeDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the double is not started")
        return str(self._server.make_url("")).rstrip("/")

    # ------------------------------------------------------------------ RBAC

    def grant(self, token: str, rules: Sequence[Any], *, user: str | None = None) -> None:
        """Let ``token`` in with ``rules`` (PolicyRule dicts, optionally namespace-scoped,
        ``Grant`` objects, or V1PolicyRule models)."""
        self._rbac = True
        name = user or f"system:serviceaccount:test:{token}"
        self._identities[token] = (name, [as_rule(rule) for rule in rules])

    def add_token(self, token: str, user: str, groups: Sequence[str] = ()) -> None:
        """Make ``token`` one a TokenReview authenticates as ``user`` in ``groups``, without
        letting it call the double (that is :meth:`grant`) nor switching RBAC on."""
        self._token_users[token] = (user, tuple(groups))

    def bind(
        self, rules: Sequence[Any], *, user: str | None = None, group: str | None = None
    ) -> None:
        """Bind ``rules`` to a user or a group for SubjectAccessReviews (as a RoleBinding or
        ClusterRoleBinding would; a rule's ``namespace`` key scopes it). Requests to the double
        itself are authorized by token (:meth:`grant`), not by these."""
        if (user is None) == (group is None):
            raise ValueError("bind to exactly one of user or group")
        kind, name = ("User", user) if user is not None else ("Group", group or "")
        self._bindings.append((kind, name, [as_rule(rule) for rule in rules]))

    def _token_identity(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        if token in self._token_users:
            return self._token_users[token]
        identity = self._identities.get(token)
        return (identity[0], ()) if identity is not None else None

    def _rules_of(self, user: str, groups: Sequence[str]) -> list[PolicyRule]:
        rules = [
            rule for name, granted in self._identities.values() if name == user for rule in granted
        ]
        for kind, name, bound in self._bindings:
            if (kind == "User" and name == user) or (kind == "Group" and name in groups):
                rules.extend(bound)
        return rules

    def used_permissions(self) -> dict[tuple[str, str, str], list[RequestRecord]]:
        """Allowed requests by ``(apiGroup, resource, verb)``."""
        used: dict[tuple[str, str, str], list[RequestRecord]] = {}
        for record in self.requests:
            if record.allowed and record.attributes is not None:
                used.setdefault(record.attributes.permission, []).append(record)
        return used

    def unused_permissions(self, token: str | None = None) -> set[tuple[str, str, str]]:
        """Permissions the rules of ``token`` grant explicitly that no request of it used."""
        token = token or self.token
        _, rules = self._identities.get(token, ("", []))
        used = {
            r.attributes.permission
            for r in self.requests
            if r.allowed and r.token == token and r.attributes is not None
        }
        return granted_permissions(rules) - used

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        *,
        message: str | None = None,
        reason: str | None = None,
    ) -> InjectedFault:
        """Answer the next ``times`` requests matching ``method`` (or ``*``) and ``path_regex``
        (``re.search`` on the URL path) with a ``Status`` of code ``status``."""
        fault = InjectedFault(
            method=method.upper(),
            path_regex=re.compile(path_regex),
            status=status,
            remaining=times,
            headers=dict(headers or {}),
            message=message or f"injected failure ({status})",
            reason=reason,
        )
        self._faults.append(fault)
        return fault

    def drop_watches(self, *, abort: bool = False) -> int:
        """End every open watch: cleanly (``abort=False``, like a server-side timeout) or by
        closing the connection. Returns how many were dropped."""
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.queue.put_nowait("abort" if abort else "end")
        return len(watchers)

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    async def wait_for_watches(self, count: int = 1, timeout_seconds: float = 5.0) -> None:
        """Wait until at least ``count`` watches are open (no polling, no sleeps)."""
        async with asyncio.timeout(timeout_seconds), self._watch_changed:
            await self._watch_changed.wait_for(lambda: len(self._watchers) >= count)

    async def wait_for_no_watches(self, timeout_seconds: float = 5.0) -> None:
        """Wait until every watch has ended (client gone, timed out or dropped)."""
        async with asyncio.timeout(timeout_seconds), self._watch_changed:
            await self._watch_changed.wait_for(lambda: not self._watchers)

    def compact(self) -> None:
        """Forget the watch history: watches from an older resourceVersion get 410 Gone."""
        self._compacted_before = self._resource_version
        self._history.clear()

    # ------------------------------------------------------------------ direct store access

    @property
    def resource_version(self) -> str:
        return str(self._resource_version)

    def put_object(self, obj: Mapping[str, Any]) -> Obj:
        """Create or replace ``obj`` bypassing auth and preconditions (status included);
        still validated, versioned and sent to watchers. Returns the stored copy."""
        rt = by_kind(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        key = (rt, namespace, meta.get("name", ""))
        body = copy.deepcopy(dict(obj))
        body.setdefault("metadata", {})["namespace"] = namespace
        if key in self._objects:
            return self._store_update(rt, namespace, key[2], body, keep_status=False, force=True)
        return self._store_create(rt, namespace, body, reset_status=False)

    def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        stored = self._objects.get((by_kind(api_version, kind), namespace, name))
        return copy.deepcopy(stored) if stored is not None else None

    def delete_object(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        rt = by_kind(api_version, kind)
        if (rt, namespace, name) not in self._objects:
            return None
        return self._store_delete(rt, namespace, name, {})

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        rt = by_kind(api_version, kind)
        return [copy.deepcopy(o) for o in self._select(rt, namespace, lambda _: True)]

    def list_events(self, namespace: str | None = None) -> list[Obj]:
        """core/v1 and events.k8s.io/v1 Events, oldest first."""
        events = self._select(CORE_EVENT, namespace, lambda _: True)
        events += self._select(EVENTS_V1_EVENT, namespace, lambda _: True)
        events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [copy.deepcopy(e) for e in events]

    # ------------------------------------------------------------------ store internals

    def _select(
        self, rt: ResourceType, namespace: str | None, pred: Callable[[Obj], bool]
    ) -> list[Obj]:
        return [
            obj
            for (obj_rt, ns, _), obj in sorted(
                self._objects.items(), key=lambda kv: (kv[0][1], kv[0][2])
            )
            if obj_rt == rt and (namespace is None or ns == namespace) and pred(obj)
        ]

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _validate(self, obj: Obj) -> None:
        try:
            validate_object(obj, self.kubernetes_version)
        except InvalidObject as error:
            rt = by_kind(obj["apiVersion"], obj["kind"])
            name = (obj.get("metadata") or {}).get("name", "")
            causes = [
                {"reason": c.reason, "message": c.message, "field": c.field} for c in error.causes
            ]
            raise ApiError(
                422,
                f'{obj["kind"]}{"." + rt.group if rt.group else ""} "{name}" is invalid: {error}',
                details=_details(rt, name, causes=causes),
            ) from None

    def _emit(self, rt: ResourceType, event_type: str, obj: Obj) -> None:
        entry = _HistoryEntry(int(obj["metadata"]["resourceVersion"]), rt, event_type, obj)
        self._history.append(entry)
        namespace = obj["metadata"].get("namespace")
        for watcher in self._watchers:
            if watcher.resource != rt or watcher.namespace not in {None, namespace}:
                continue
            if watcher.selector(obj):
                watcher.queue.put_nowait({"type": event_type, "object": copy.deepcopy(obj)})

    def _normalise(self, rt: ResourceType, namespace: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        body.setdefault("apiVersion", rt.api_version)
        body.setdefault("kind", rt.kind)
        if (body["apiVersion"], body["kind"]) != (rt.api_version, rt.kind):
            raise ApiError(
                400,
                f"the API version in the data ({body['apiVersion']}) does not match the expected "
                f"API version ({rt.api_version}) or kind {body['kind']!r} is not {rt.kind!r}",
            )
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if meta.get("namespace") not in {None, "", namespace}:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        meta["namespace"] = namespace
        return body

    def _store_create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Obj,
        *,
        reset_status: bool,
        dry_run: bool = False,
    ) -> Obj:
        body = self._normalise(rt, namespace, body)
        meta = body["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(
                secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5)
            )
            meta["name"] = meta["generateName"] + suffix
        name = meta.get("name") or ""
        if reset_status and rt.has_status:
            body["status"] = {"desiredReplicas": 0}
        for server_field in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp"):
            meta.pop(server_field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now_rfc3339()
        meta["generation"] = 1
        meta["resourceVersion"] = str(self._resource_version + 1)
        self._validate(body)
        key = (rt, namespace, name)
        if key in self._objects:
            raise ApiError(
                409,
                f'{rt.group_resource} "{name}" already exists',
                reason="AlreadyExists",
                details=_details(rt, name),
            )
        if dry_run:
            return body
        self._next_version()
        self._objects[key] = body
        self._emit(rt, "ADDED", copy.deepcopy(body))
        return copy.deepcopy(body)

    def _store_update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        keep_status: bool,
        force: bool = False,
        status_only: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        key = (rt, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise not_found(rt, name)
        body = self._normalise(rt, namespace, body)
        meta = body["metadata"]
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({name})",
            )
        current_meta = current["metadata"]
        if not force:
            sent_version = meta.get("resourceVersion")
            if sent_version and sent_version != current_meta["resourceVersion"]:
                raise conflict(rt, name)
            sent_uid = meta.get("uid")
            if sent_uid and sent_uid != current_meta["uid"]:
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {sent_uid}, UID in object meta: "
                    f"{current_meta['uid']}",
                )
        if status_only:
            body = {**copy.deepcopy(current), "status": body.get("status")}
            if body["status"] is None:
                del body["status"]
            meta = body["metadata"]
        elif keep_status and rt.has_status:
            if "status" in current:
                body["status"] = copy.deepcopy(current["status"])
            else:
                body.pop("status", None)
        meta["name"] = name
        meta["uid"] = current_meta["uid"]
        meta["creationTimestamp"] = current_meta["creationTimestamp"]
        generation = current_meta.get("generation", 1)
        if _body_without_meta(body) != _body_without_meta(current):
            generation += 1
        meta["generation"] = generation
        meta["resourceVersion"] = str(self._resource_version + 1)
        stored: Obj = body
        self._validate(stored)
        if dry_run:
            return stored
        self._next_version()
        self._objects[key] = stored
        self._emit(rt, "MODIFIED", copy.deepcopy(stored))
        return copy.deepcopy(stored)

    def _store_delete(
        self, rt: ResourceType, namespace: str, name: str, preconditions: Mapping[str, Any]
    ) -> Obj:
        key = (rt, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise not_found(rt, name)
        meta = current["metadata"]
        if preconditions.get("resourceVersion") not in {None, meta["resourceVersion"]}:
            raise conflict(rt, name)
        if preconditions.get("uid") not in {None, meta["uid"]}:
            raise conflict(
                rt, name, f"Precondition failed: UID in precondition: {preconditions['uid']}"
            )
        del self._objects[key]
        deleted = copy.deepcopy(current)
        deleted["metadata"]["resourceVersion"] = self._next_version()
        self._emit(rt, "DELETED", copy.deepcopy(deleted))
        return deleted

    # ------------------------------------------------------------------ HTTP

    def _authorize(self, request: web.Request, attrs: RequestAttributes) -> tuple[str | None, bool]:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if not self._rbac:
            return token, True
        identity = self._identities.get(token or "")
        if identity is None:
            raise ApiError(401, "Unauthorized")
        _, rules = identity
        if not rules_allow(rules, attrs):
            return token, False
        return token, True

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.method.upper()
        query = dict(request.query)
        record_args: dict[str, Any] = {"method": method, "path": request.path, "query": query}
        if method in {"PATCH", "PUT", "POST"}:
            record_args["body"] = await request.read()  # aiohttp keeps it for the handler
        for fault in self._faults:
            if fault.matches(method, request.path):
                fault.remaining -= 1
                self.requests.append(
                    RequestRecord(
                        **record_args,
                        token=None,
                        attributes=None,
                        allowed=False,
                        status=fault.status,
                    )
                )
                return ApiError(
                    fault.status, fault.message, reason=fault.reason, headers=fault.headers
                ).response()
        parsed = parse_path(request.path)
        token: str | None = None
        attrs: RequestAttributes | None = None
        allowed = False
        try:
            if parsed is None:
                try:
                    attrs = review_attributes(method, request.path)
                except ReviewError as error:
                    raise ApiError(error.code, error.message) from None
                if attrs is None:
                    raise ApiError(404, "the server could not find the requested resource")
            else:
                attrs = self._attributes(method, query, parsed)
            token, allowed = self._authorize(request, attrs)
            if not allowed:
                user = self._identities.get(token or "", (self._default_user, []))[0]
                raise ApiError(
                    403,
                    forbidden_message(attrs, user),
                    details={"group": attrs.api_group, "kind": attrs.resource}
                    | ({"name": attrs.name} if attrs.name else {}),
                )
            try:
                if parsed is None:
                    response = await self._review(request, attrs)
                else:
                    response = await self._dispatch(request, parsed, attrs, query)
            except asyncio.CancelledError:
                # A watch its client went away from: it was made and allowed all the same.
                self.requests.append(
                    RequestRecord(**record_args, token=token, attributes=attrs, allowed=True)
                )
                raise
        except ApiError as error:
            self.requests.append(
                RequestRecord(
                    **record_args, token=token, attributes=attrs, allowed=allowed, status=error.code
                )
            )
            return error.response()
        self.requests.append(
            RequestRecord(
                **record_args, token=token, attributes=attrs, allowed=True, status=response.status
            )
        )
        return response

    @staticmethod
    def _attributes(method: str, query: Mapping[str, str], parsed: ParsedPath) -> RequestAttributes:
        name = parsed.name
        watching = query.get("watch", "").lower() in {"true", "1"}
        if method == "GET":
            if name is not None:
                verb = "get"
            else:
                verb = "watch" if watching else "list"
                name = _exact_name(query.get("fieldSelector"))
        elif method == "POST" and name is None:
            verb = "create"
        elif method == "PUT" and name is not None:
            verb = "update"
        elif method == "PATCH" and name is not None:
            verb = "patch"
        elif method == "DELETE" and name is not None:
            verb = "delete"
        else:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        return RequestAttributes(
            verb=verb,
            api_group=parsed.resource.group,
            resource=parsed.resource.plural,
            subresource=parsed.subresource,
            namespace=parsed.namespace,
            name=name,
        )

    async def _review(self, request: web.Request, attrs: RequestAttributes) -> web.Response:
        body = await self._read_json(request)
        try:
            if attrs.resource == "tokenreviews":
                answered = token_review(body, self._token_identity)
            else:
                answered = subject_access_review(body, self._rules_of)
        except ReviewError as error:
            raise ApiError(error.code, error.message) from None
        return web.json_response(answered, status=201)

    async def _read_json(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as error:
            raise ApiError(400, f"the request body is not valid JSON: {error}") from None

    async def _dispatch(
        self,
        request: web.Request,
        parsed: ParsedPath,
        attrs: RequestAttributes,
        query: Mapping[str, str],
    ) -> web.StreamResponse:
        rt, namespace, name = parsed.resource, parsed.namespace, parsed.name
        dry_run = "dryRun" in query
        content_type = request.content_type
        if attrs.verb in {"create", "update"} and content_type not in {"application/json", ""}:
            raise ApiError(415, f"the body of the request was in an unknown format: {content_type}")
        if attrs.verb == "get":
            assert namespace is not None and name is not None
            obj = self._objects.get((rt, namespace, name))
            if obj is None:
                raise not_found(rt, name)
            if parsed.subresource == "scale":
                return web.json_response(_scale_of(obj))
            return web.json_response(obj)
        if parsed.subresource == "scale":
            raise ApiError(405, "the double serves the scale subresource for reading only")
        if attrs.verb == "list":
            return self._list(rt, namespace, query)
        if attrs.verb == "watch":
            return await self._watch(request, rt, namespace, query)
        assert namespace is not None
        if attrs.verb == "create":
            body = await self._read_json(request)
            created = self._store_create(rt, namespace, body, reset_status=True, dry_run=dry_run)
            return web.json_response(created, status=201)
        assert name is not None
        if attrs.verb == "update":
            body = await self._read_json(request)
            updated = self._store_update(
                rt,
                namespace,
                name,
                body,
                keep_status=not parsed.subresource,
                status_only=bool(parsed.subresource),
                dry_run=dry_run,
            )
            return web.json_response(updated)
        if attrs.verb == "patch":
            current = self._objects.get((rt, namespace, name))
            if current is None:
                raise not_found(rt, name)
            patch = await self._read_json(request)
            patched = self._apply_patch(current, patch, content_type)
            updated = self._store_update(
                rt,
                namespace,
                name,
                patched,
                keep_status=not parsed.subresource,
                status_only=bool(parsed.subresource),
                dry_run=dry_run,
            )
            return web.json_response(updated)
        body = await self._read_json(request) or {}
        preconditions = body.get("preconditions") or {} if isinstance(body, dict) else {}
        deleted = self._store_delete(rt, namespace, name, preconditions)
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": _details(rt, name, uid=deleted["metadata"]["uid"]),
            }
        )

    @staticmethod
    def _apply_patch(current: Obj, patch: Any, content_type: str) -> Obj:
        try:
            if content_type in {MERGE_PATCH, STRATEGIC_MERGE_PATCH}:
                if not isinstance(patch, dict):
                    raise ApiError(400, "a merge patch must be a JSON object")
                result = apply_merge_patch(current, patch)
            elif content_type == JSON_PATCH:
                result = apply_json_patch(current, patch)
            else:
                raise ApiError(
                    415, f"the body of the request was in an unknown format: {content_type}"
                )
        except PatchError as error:
            code = 400 if error.bad_request else 422
            raise ApiError(code, f"the patch could not be applied: {error.message}") from None
        if not isinstance(result, dict):
            raise ApiError(422, "the patched object is not a JSON object")
        return result

    def _list(
        self, rt: ResourceType, namespace: str | None, query: Mapping[str, str]
    ) -> web.Response:
        selector = _selector(query.get("labelSelector"), query.get("fieldSelector"))
        items = []
        for obj in self._select(rt, namespace, selector):
            item = copy.deepcopy(obj)
            item.pop("apiVersion", None)
            item.pop("kind", None)
            items.append(item)
        return web.json_response(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": self.resource_version},
                "items": items,
            }
        )

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        query: Mapping[str, str],
    ) -> web.StreamResponse:
        selector = _selector(query.get("labelSelector"), query.get("fieldSelector"))
        raw_version = query.get("resourceVersion", "")
        timeout: float | None = None
        if query.get("timeoutSeconds"):
            try:
                timeout = float(query["timeoutSeconds"])
            except ValueError:
                raise ApiError(400, "timeoutSeconds must be a number") from None
            timeout = timeout or None  # 0 means the server's own (long) default, as upstream
        initial: list[Obj | str] = []
        if raw_version in {"", "0"}:
            initial = [
                {"type": "ADDED", "object": copy.deepcopy(o)}
                for o in self._select(rt, namespace, selector)
            ]
        else:
            try:
                since = int(raw_version)
            except ValueError:
                raise ApiError(400, f"invalid resourceVersion {raw_version!r}") from None
            if since < self._compacted_before:
                gone = ApiError(
                    410, f"too old resource version: {since} ({self._compacted_before})"
                )
                initial = [{"type": "ERROR", "object": gone.status()}, "end"]
            else:
                initial = [
                    {"type": e.event_type, "object": copy.deepcopy(e.obj)}
                    for e in self._history
                    if e.resource_version > since
                    and e.resource == rt
                    and namespace in {None, e.obj["metadata"].get("namespace")}
                    and selector(e.obj)
                ]
        watcher = _Watcher(rt, namespace, selector)
        for item in initial:
            watcher.queue.put_nowait(item)
        self._watchers.append(watcher)
        await self._notify_watchers()
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    async with asyncio.timeout(remaining):
                        item = await watcher.queue.get()
                except TimeoutError:
                    break
                if item == "end":
                    break
                if item == "abort":
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await response.write(json.dumps(item).encode() + b"\n")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._watchers.remove(watcher)
            with contextlib.suppress(RuntimeError):
                await self._notify_watchers()
        return response

    async def _notify_watchers(self) -> None:
        async with self._watch_changed:
            self._watch_changed.notify_all()


__all__ = ["DEFAULT_TOKEN", "RESOURCE_TYPES", "ApiError", "InjectedFault", "KubeDouble"]


def _scale_of(obj: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale of a workload, as the API server derives it: replicas from
    the spec and status, and ``status.selector`` the serialized label selector of the spec
    (what the HPA controller lists pods with)."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    selector = spec.get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        else:
            parts.append(f"!{key}")
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {"replicas": status.get("replicas", 0), "selector": ",".join(parts)},
    }
