"""Delegated authentication and authorization of an aggregated API server: the pure part.

No I/O, only computation: the request-header settings of the ``extension-apiserver-authentication``
ConfigMap, the user a trusted front proxy names in its headers, the attributes of a request as
``k8s.io/apiserver``'s ``RequestInfoFactory`` derives them, the ``SubjectAccessReview`` spec for
them, and a bounded cache with an explicit ``now``. The I/O (TokenReview, SubjectAccessReview,
the aiohttp middleware) is in :mod:`predictive_scaler.delegated_auth`.
"""

from __future__ import annotations

import json
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

__all__ = [
    "AUTHENTICATED_GROUP",
    "AUTHENTICATION_CONFIGMAP",
    "RequestAttributes",
    "RequestHeaderConfig",
    "TtlCache",
    "UserInfo",
    "compute_request_attributes",
    "compute_subject_access_review",
    "compute_user_from_headers",
    "forbidden_message",
    "parse_authentication_configmap",
    "status_body",
    "user_from_token_review",
]

AUTHENTICATION_CONFIGMAP: Final = ("kube-system", "extension-apiserver-authentication")
"""``(namespace, name)`` of the ConfigMap the API server publishes its front-proxy CA in."""
AUTHENTICATED_GROUP: Final = "system:authenticated"
"""Every authenticated user is in this group (``k8s.io/apiserver``'s group adder)."""

_API_PREFIXES: Final = frozenset({"api", "apis"})
_VERBS: Final = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class UserInfo:
    """Who made a request, as the authenticators say (``user.Info``)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def with_authenticated_group(self) -> UserInfo:
        """The user with :data:`AUTHENTICATED_GROUP` added unless present (as upstream adds it
        to whatever any authenticator returns)."""
        if AUTHENTICATED_GROUP in self.groups:
            return self
        return UserInfo(self.username, self.uid, (*self.groups, AUTHENTICATED_GROUP), self.extra)


@dataclass(frozen=True)
class RequestHeaderConfig:
    """Whom to trust as a front proxy (the kube-aggregator) and where it names the user."""

    client_ca_pem: str
    """PEM bundle the proxy's client certificate must chain to."""
    allowed_names: tuple[str, ...] = ()
    """Common names of the proxy's certificate that may name users; empty: any name."""
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_header_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


def _string_list(data: Mapping[str, str], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = data.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"{key}: not a JSON list of strings: {error}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key}: not a JSON list of strings: {raw!r}")
    return tuple(value)


def parse_authentication_configmap(data: Mapping[str, str]) -> RequestHeaderConfig | None:
    """The request-header settings of the ``extension-apiserver-authentication`` ConfigMap;
    ``None`` when it holds no ``requestheader-client-ca-file`` (the API server runs without a
    front proxy). The list keys are JSON arrays, as the API server writes them; a missing or
    empty list header key keeps the API server's default header. Raises ``ValueError`` for a
    key that is not a JSON list of strings."""
    ca = data.get("requestheader-client-ca-file", "")
    if not ca.strip():
        return None
    defaults = RequestHeaderConfig(ca)
    return RequestHeaderConfig(
        client_ca_pem=ca,
        allowed_names=_string_list(data, "requestheader-allowed-names", ()),
        username_headers=_string_list(
            data, "requestheader-username-headers", defaults.username_headers
        ),
        group_headers=_string_list(data, "requestheader-group-headers", defaults.group_headers),
        extra_header_prefixes=_string_list(
            data, "requestheader-extra-headers-prefix", defaults.extra_header_prefixes
        ),
    )


def compute_user_from_headers(
    config: RequestHeaderConfig,
    common_name: str | None,
    headers: Iterable[tuple[str, str]],
) -> UserInfo | None:
    """The user a verified front-proxy certificate names in the request headers, or ``None``:
    no verified certificate (``common_name is None``), a common name outside
    ``allowed_names``, or no user header. Then the headers are ignored and the request is
    authenticated otherwise (a bearer token), as ``k8s.io/apiserver``'s union of
    authenticators does.

    ``headers`` are the raw ``(name, value)`` pairs, repeats included: the first non-empty
    value of the first username header that has one names the user; every value of every group
    header is a group; ``<prefix><key>: value`` is extra ``key`` (lower-cased, %-unescaped)."""
    if common_name is None:
        return None
    if config.allowed_names and common_name not in config.allowed_names:
        return None
    items = [(name.lower(), value) for name, value in headers]
    username = ""
    for header in config.username_headers:
        values = [value.strip() for name, value in items if name == header.lower()]
        username = next((value for value in values if value), "")
        if username:
            break
    if not username:
        return None
    group_headers = {header.lower() for header in config.group_headers}
    groups = tuple(value for name, value in items if name in group_headers)
    extra: dict[str, list[str]] = {}
    prefixes = [prefix.lower() for prefix in config.extra_header_prefixes]
    for name, value in items:
        for prefix in prefixes:
            if name.startswith(prefix) and len(name) > len(prefix):
                key = urllib.parse.unquote(name[len(prefix) :]).lower()
                extra.setdefault(key, []).append(value)
                break
    return UserInfo(username, "", groups, {k: tuple(v) for k, v in extra.items()})


def user_from_token_review(status: Mapping[str, Any]) -> UserInfo | None:
    """The user of a TokenReview's ``status``, or ``None`` when not authenticated."""
    if status.get("authenticated") is not True:
        return None
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username:
        return None
    extra = {
        str(key): tuple(str(v) for v in values or ())
        for key, values in (user.get("extra") or {}).items()
    }
    groups = tuple(str(group) for group in user.get("groups") or ())
    return UserInfo(username, str(user.get("uid") or ""), groups, extra)


@dataclass(frozen=True)
class RequestAttributes:
    """What the authorizer sees of a request (``authorizer.Attributes``)."""

    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def compute_request_attributes(
    method: str, path: str, query: Mapping[str, str] | None = None
) -> RequestAttributes:
    """The attributes of a request, as ``k8s.io/apiserver``'s ``RequestInfoFactory`` derives
    them: ``/apis/<group>/<version>/[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]``
    (and ``/api/<version>/...``) is a resource request; anything shorter (``/apis``,
    ``/apis/<group>``, ``/apis/<group>/<version>``: discovery) or outside those prefixes is a
    non-resource request whose verb is the lower-cased method. A GET of a collection is
    ``list`` (``watch`` with ``watch=true``), of a named object ``get``."""
    query = query or {}
    method = method.upper()
    parts = [part for part in path.split("/") if part]
    non_resource = RequestAttributes(method.lower(), path, False)
    if not parts or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    elif len(rest) < 2:
        return non_resource
    version, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces":
        if len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        elif len(rest) == 2:
            namespace = rest[1]  # the namespace object itself: resource namespaces, name <ns>
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if method in {"GET", "HEAD"}:
        watching = query.get("watch", "").lower() in {"true", "1"}
        verb = "get" if name else "watch" if watching else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    return RequestAttributes(
        verb, path, True, group, version, namespace, resource, subresource, name
    )


def compute_subject_access_review(user: UserInfo, attributes: RequestAttributes) -> dict[str, Any]:
    """The ``spec`` of an ``authorization.k8s.io/v1`` SubjectAccessReview asking whether
    ``user`` may make the request."""
    spec: dict[str, Any] = {"user": user.username, "groups": list(user.groups)}
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = {key: list(values) for key, values in sorted(user.extra.items())}
    if attributes.resource_request:
        resource: dict[str, str] = {
            "verb": attributes.verb,
            "group": attributes.api_group,
            "version": attributes.api_version,
            "resource": attributes.resource,
        }
        for key, value in (
            ("namespace", attributes.namespace),
            ("subresource", attributes.subresource),
            ("name", attributes.name),
        ):
            if value:
                resource[key] = value
        spec["resourceAttributes"] = resource
    else:
        spec["nonResourceAttributes"] = {"path": attributes.path, "verb": attributes.verb}
    return spec


def forbidden_message(user: UserInfo, attributes: RequestAttributes, reason: str = "") -> str:
    """The API server's wording of a 403."""
    if attributes.resource_request:
        resource = attributes.resource
        if attributes.subresource:
            resource = f"{resource}/{attributes.subresource}"
        subject = f"{resource}.{attributes.api_group}" if attributes.api_group else resource
        if attributes.name:
            subject = f'{subject} "{attributes.name}"'
        scope = (
            f' in the namespace "{attributes.namespace}"'
            if attributes.namespace
            else " at the cluster scope"
        )
        message = (
            f'{subject} is forbidden: User "{user.username}" cannot {attributes.verb} '
            f'resource "{resource}" in API group "{attributes.api_group}"{scope}'
        )
    else:
        message = (
            f'forbidden: User "{user.username}" cannot {attributes.verb} path "{attributes.path}"'
        )
    return f"{message}: {reason}" if reason else message


_K = TypeVar("_K")
_V = TypeVar("_V")


class TtlCache(Generic[_K, _V]):
    """A bounded map whose entries expire: at most ``max_entries`` (the least recently used go
    first), each good for the TTL it was put with. Time is passed in (seconds of a monotonic
    clock), so tests need no sleeps."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[_K, tuple[float, _V]] = OrderedDict()

    def get(self, key: _K, now: float) -> _V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: _K, value: _V, now: float, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            return
        self._entries[key] = (now + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``metav1.Status`` failure, as every API server answers errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
