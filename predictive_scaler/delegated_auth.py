"""Delegated authentication and authorization for the External Metrics API server.

As aggregated API servers do (``k8s.io/apiserver``'s delegating authenticator and authorizer,
used by prometheus-adapter and KEDA's metrics server):

1. **Authentication**, first that succeeds: a client certificate that chains to the
   request-header CA (the kube-aggregator's front-proxy certificate) and whose common name is
   allowed names the user in ``X-Remote-User`` / ``X-Remote-Group`` / ``X-Remote-Extra-*``;
   else ``Authorization: Bearer <token>`` checked by a TokenReview through the API server;
   else 401.
2. **Authorization**: a SubjectAccessReview for that user and the request's attributes;
   denied: 403. ``/healthz`` is always allowed (the kubelet's probe has no credentials).

TokenReview and SubjectAccessReview answers are cached briefly (10 s each by default, as
upstream), so an HPA polling every 15 s costs at most one of each per poll, in a bounded cache.
The request-header CA comes from ``--requestheader-client-ca-file`` or the
``kube-system/extension-apiserver-authentication`` ConfigMap; the TLS context asks for client
certificates (``CERT_OPTIONAL``) with that CA, so bearer-token callers still connect.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web

from predictive_scaler.logs import get_logger
from predictive_scaler.request_auth import (
    AUTHENTICATION_CONFIGMAP,
    RequestHeaderConfig,
    TtlCache,
    UserInfo,
    compute_request_attributes,
    compute_subject_access_review,
    compute_user_from_headers,
    forbidden_message,
    parse_authentication_configmap,
    status_body,
    user_from_token_review,
)
from predictive_scaler.values import KubeApiError, NotFoundError

__all__ = [
    "ALWAYS_ALLOW_PATHS",
    "AuthApi",
    "AuthCacheSettings",
    "DelegatedAuth",
    "peer_common_name",
]

ALWAYS_ALLOW_PATHS: Final = frozenset({"/healthz"})
"""Served without credentials (k8s.io/apiserver's ``--authorization-always-allow-paths``)."""

log = get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AuthApi(Protocol):
    """The API server calls delegated auth makes (met by ``kube.KubeClient``)."""

    async def create_token_review(self, token: str) -> dict[str, Any]: ...

    async def create_subject_access_review(self, spec: Mapping[str, Any]) -> dict[str, Any]: ...

    async def read_extension_apiserver_authentication(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class AuthCacheSettings:
    """How long answers of the API server are reused (k8s.io/apiserver's defaults)."""

    authentication_ttl_seconds: float = 10.0
    """A TokenReview's answer, authenticated or not
    (``--authentication-token-webhook-cache-ttl``)."""
    allowed_ttl_seconds: float = 10.0
    """An allowing SubjectAccessReview (``--authorization-webhook-cache-authorized-ttl``)."""
    denied_ttl_seconds: float = 10.0
    """A denying one (``--authorization-webhook-cache-unauthorized-ttl``)."""
    max_entries: int = 1024
    """Per cache; the least recently used answer goes first."""


def peer_common_name(request: web.BaseRequest) -> str | None:
    """The subject common name of the client certificate the TLS handshake verified, if any.
    Python's server verifies any certificate a client presents (``CERT_OPTIONAL``) and fails
    the handshake for one that does not chain to the loaded CA, so a certificate seen here is a
    verified one."""
    peer = request.get_extra_info("peercert")
    if not isinstance(peer, Mapping):
        return None
    for rdn in peer.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _bearer_token(request: web.BaseRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status_body(code, reason, message), status=code)


class DelegatedAuth:
    """Authenticates and authorizes each request through the API server (see the module doc).

    ``prepare`` (once, before the TLS context is built) settles the request-header CA; then
    :attr:`middleware` guards an aiohttp application.
    """

    def __init__(
        self,
        api: AuthApi,
        *,
        client_ca_file: str | None = None,
        allowed_names: Sequence[str] = (),
        skip_lookup: bool = False,
        cache: AuthCacheSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        always_allow_paths: frozenset[str] = ALWAYS_ALLOW_PATHS,
    ) -> None:
        self.api = api
        self.client_ca_file = client_ca_file
        self.allowed_names = tuple(allowed_names)
        self.skip_lookup = skip_lookup
        self.cache = cache or AuthCacheSettings()
        self.clock = clock
        self.always_allow_paths = always_allow_paths
        self.requestheader: RequestHeaderConfig | None = None
        self._tokens: TtlCache[str, tuple[UserInfo | None]] = TtlCache(self.cache.max_entries)
        self._decisions: TtlCache[str, tuple[bool, str]] = TtlCache(self.cache.max_entries)

    @property
    def client_ca_pem(self) -> str | None:
        """The CA client certificates are verified against; ``None``: no front proxy."""
        return self.requestheader.client_ca_pem if self.requestheader else None

    async def prepare(self) -> None:
        """Settle the request-header configuration: ``client_ca_file`` with ``allowed_names``
        and the default headers when given (``OSError`` if unreadable), else the
        ``extension-apiserver-authentication`` ConfigMap unless ``skip_lookup``. A ConfigMap
        that is missing, unreadable or malformed leaves the front proxy untrusted (bearer
        tokens still work) and says why in the log: it never grants more."""
        if self.client_ca_file is not None:
            pem = await asyncio.to_thread(Path(self.client_ca_file).read_text, encoding="utf-8")
            self.requestheader = RequestHeaderConfig(pem, self.allowed_names)
            return
        if self.skip_lookup:
            return
        namespace, name = AUTHENTICATION_CONFIGMAP
        try:
            data = await self.api.read_extension_apiserver_authentication()
            self.requestheader = parse_authentication_configmap(data)
        except NotFoundError:
            log.warning("requestheader_config_missing", configmap=f"{namespace}/{name}")
            return
        except (KubeApiError, ValueError) as error:
            log.error(
                "requestheader_lookup_failed", configmap=f"{namespace}/{name}", error=str(error)
            )
            return
        if self.requestheader is None:
            log.warning(
                "requestheader_config_missing",
                configmap=f"{namespace}/{name}",
                key="requestheader-client-ca-file",
            )

    # ------------------------------------------------------------------ authentication

    async def authenticate(self, request: web.BaseRequest) -> UserInfo | None:
        """The request's user, or ``None`` (401). Raises :class:`KubeApiError` when the
        TokenReview fails."""
        if self.requestheader is not None:
            user = compute_user_from_headers(
                self.requestheader, peer_common_name(request), request.headers.items()
            )
            if user is not None:
                return user.with_authenticated_group()
        token = _bearer_token(request)
        if token is None:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        cached = self._tokens.get(key, now)
        if cached is not None:
            return cached[0]
        status = await self.api.create_token_review(token)
        user = user_from_token_review(status)
        if user is not None:
            user = user.with_authenticated_group()
        self._tokens.put(key, (user,), now, self.cache.authentication_ttl_seconds)
        return user

    # ------------------------------------------------------------------ authorization

    async def authorize(self, user: UserInfo, spec: Mapping[str, Any]) -> tuple[bool, str]:
        """``(allowed, reason)`` of a SubjectAccessReview ``spec``. Raises
        :class:`KubeApiError` when the review fails (not cached)."""
        key = json.dumps(spec, sort_keys=True)
        now = self.clock()
        cached = self._decisions.get(key, now)
        if cached is not None:
            return cached
        status = await self.api.create_subject_access_review(spec)
        allowed = status.get("allowed") is True and status.get("denied") is not True
        decision = (allowed, str(status.get("reason") or ""))
        ttl = self.cache.allowed_ttl_seconds if allowed else self.cache.denied_ttl_seconds
        self._decisions.put(key, decision, now, ttl)
        return decision

    # ------------------------------------------------------------------ the filter

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self.always_allow_paths:
            return await handler(request)
        try:
            user = await self.authenticate(request)
        except KubeApiError as error:
            # As upstream: an authenticator that errs authenticates no one.
            log.warning("token_review_failed", error=str(error), path=request.path)
            user = None
        if user is None:
            return _status(401, "Unauthorized", "Unauthorized")
        attributes = compute_request_attributes(request.method, request.path, request.query)
        spec = compute_subject_access_review(user, attributes)
        try:
            allowed, reason = await self.authorize(user, spec)
        except KubeApiError as error:
            log.warning(
                "subject_access_review_failed",
                error=str(error),
                user=user.username,
                path=request.path,
            )
            return _status(
                500, "InternalError", f"Internal error occurred: authorization failed: {error}"
            )
        if not allowed:
            return _status(403, "Forbidden", forbidden_message(user, attributes, reason))
        return await handler(request)
