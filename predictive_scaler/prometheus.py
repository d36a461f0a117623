"""Metric source adapter: PromQL range and instant queries against Prometheus.

The only module that imports `prometheus_api_client`. It runs the blocking client in a
worker thread with finite timeouts, and turns every answer into a value: `fetch_range` never
raises for a bad answer or an unreachable server; it returns a `RangeResult` whose `status`
says what happened and whose one-line `message` says why (never containing a credential).
The queries it is given are rendered by :mod:`predictive_scaler.promql`.

Secrets (bearer token, basic-auth password) live in files and are read at request time, so
rotated credentials are picked up without a restart; they never appear in `repr`, messages
or logs.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import math
import os
import re
import ssl
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import requests
import requests.auth
import urllib3.exceptions
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

# The PromQL rendering lives in promql.py and the answers' values in ranges.py; their names
# stay importable from here.
from predictive_scaler.promql import (
    batch_shape,
    batchable_metrics,
    escape_promql_string,
    escape_re2_literal,
    fresh_samples_template,
    latest_sample_template,
    render_batch_query,
    render_matchers,
    render_query,
    reporting_pods_template,
)
from predictive_scaler.ranges import (
    AnswerShapeError,
    GroupedRanges,
    RangeResult,
    RangeStatus,
    SeriesSums,
    empty_range,
    error_range,
    frozen_array,
    parse_instant,
    parse_matrix,
)

__all__ = [
    "MAX_POINTS_PER_QUERY",
    "GroupedRanges",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusSettings",
    "PrometheusSource",
    "PrometheusUnavailable",
    "RangeResult",
    "RangeStatus",
    "batch_shape",
    "batchable_metrics",
    "escape_promql_string",
    "escape_re2_literal",
    "fresh_samples_template",
    "latest_sample_template",
    "render_batch_query",
    "render_matchers",
    "render_query",
    "reporting_pods_template",
]

MAX_POINTS_PER_QUERY: Final = 10_000
"""Points per series per range request; Prometheus rejects more than 11,000."""

_MESSAGE_LIMIT: Final = 300
_T = TypeVar("_T")


# --------------------------------------------------------------------------- errors


class PrometheusError(Exception):
    """A Prometheus request failed; the message is one line and holds no secret."""


class PrometheusUnavailable(PrometheusError):
    """The server could not be reached or did not answer in time (or answered 5xx)."""


class PrometheusQueryError(PrometheusError):
    """The server answered, but rejected the query or gave an unusable answer."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, repr=False)
class PrometheusSettings:
    """How to reach Prometheus (or a compatible API: Thanos, Mimir, VictoriaMetrics)."""

    url: str
    """Base URL of the HTTP API, e.g. `http://prometheus.monitoring:9090` (no `/api/v1`)."""

    timeout_seconds: float = 10.0
    """Per-request timeout: connect and read in `requests`, and the server's query timeout."""

    bearer_token_file: str | os.PathLike[str] | None = None
    """File holding a bearer token, re-read on every request (rotated tokens are picked up)."""

    basic_auth_username: str | None = None
    """Basic-auth user name; needs `basic_auth_password_file`."""

    basic_auth_password_file: str | os.PathLike[str] | None = field(default=None, repr=False)
    """File holding the basic-auth password, re-read on every request; never logged."""

    ca_bundle: str | os.PathLike[str] | None = None
    """PEM file of CA certificates to verify the server with (instead of the system store)."""

    verify_tls: bool = True
    """Verify the server's TLS certificate. Turning it off is for tests only."""

    headers: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)
    """Extra request headers, e.g. `X-Scope-OrgID` for Mimir/Cortex/Thanos tenants."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url must be an http(s) URL with a host, got {_redact_url(self.url)!r}"
            )
        if not (self.timeout_seconds > 0 and math.isfinite(self.timeout_seconds)):
            raise ValueError(
                f"timeout_seconds must be a positive number, got {self.timeout_seconds}"
            )
        if self.bearer_token_file is not None and self.basic_auth_username is not None:
            raise ValueError("use either bearer_token_file or basic auth, not both")
        if (self.basic_auth_username is None) != (self.basic_auth_password_file is None):
            raise ValueError("basic_auth_username and basic_auth_password_file go together")
        if self.ca_bundle is not None and not self.verify_tls:
            raise ValueError("ca_bundle is set but verify_tls is false: choose one")
        object.__setattr__(self, "headers", types.MappingProxyType(dict(self.headers)))

    def __repr__(self) -> str:
        # Header values may be credentials (API keys): show names only. URL user-info is hidden.
        return (
            f"PrometheusSettings(url={_redact_url(self.url)!r}, "
            f"timeout_seconds={self.timeout_seconds!r}, "
            f"bearer_token_file={self.bearer_token_file!r}, "
            f"basic_auth_username={self.basic_auth_username!r}, "
            f"basic_auth_password_file={'<set>' if self.basic_auth_password_file else None}, "
            f"ca_bundle={self.ca_bundle!r}, verify_tls={self.verify_tls!r}, "
            f"headers=<{', '.join(sorted(self.headers)) or 'none'}>)"
        )

    __str__ = __repr__


# --------------------------------------------------------------------------- source


class PrometheusSource:
    """Reads PromQL ranges and instants from one Prometheus, off the event loop.

    Blocking `prometheus_api_client` calls run in a worker thread (`asyncio.to_thread`),
    bounded by the requests timeout and by `asyncio.wait_for`. Close it (`await aclose()` or
    `async with`) to release pooled connections; closing twice is safe.
    """

    def __init__(
        self,
        settings: PrometheusSettings,
        *,
        max_points_per_query: int = MAX_POINTS_PER_QUERY,
    ) -> None:
        if not 1 <= max_points_per_query <= 11_000:
            raise ValueError("max_points_per_query must be within 1..11000")
        self.settings = settings
        self._max_points = max_points_per_query
        self._url = settings.url.rstrip("/")
        self._display_url = _redact_url(self._url)
        self._auth = _FileAuth(settings)
        # Hard bound on one call, past the requests timeouts (connect + read are separate).
        self._deadline_seconds = 2 * settings.timeout_seconds + 1.0
        self._session = requests.Session()
        # PrometheusConnect ignores `disable_ssl` when given a session: verification is set here.
        self._session.verify = (
            os.fspath(settings.ca_bundle) if settings.ca_bundle is not None else settings.verify_tls
        )
        if self._auth.active:
            self._session.auth = self._auth
        self._client: Any = PrometheusConnect(
            url=self._url,
            headers=dict(settings.headers) or None,
            disable_ssl=not settings.verify_tls,
            # One quick retry of a failed connect; never retry reads (that would double the
            # timeout) nor statuses (the controller retries next cycle anyway).
            retry=Retry(
                total=1,
                connect=1,
                read=False,
                status=0,
                other=0,
                backoff_factor=0.0,
                raise_on_status=False,
                respect_retry_after_header=False,
            ),
            session=self._session,
            timeout=settings.timeout_seconds,
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"PrometheusSource({self.settings!r})"

    async def __aenter__(self) -> PrometheusSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._session.close()

    # ----------------------------------------------------------------- public queries

    async def fetch_range(
        self,
        query: str,
        start: datetime,
        end: datetime,
        step_seconds: float,
    ) -> RangeResult:
        """Evaluate `query` at `start, start + step, ..., <= end`; sum the series per step.

        Never raises for a failed request or a bad answer: the status says what happened.
        Raises ValueError only for invalid arguments (naive datetimes, step <= 0, end < start).
        Long ranges are split into requests of at most `max_points_per_query` points.
        """
        answer = await self.fetch_range_grouped(query, (), start, end, step_seconds)
        if isinstance(answer, RangeResult):
            return answer
        return answer.get((), empty_range(answer.grid))

    async def fetch_range_grouped(
        self,
        query: str,
        by: Sequence[str],
        start: datetime,
        end: datetime,
        step_seconds: float,
    ) -> RangeResult | GroupedRanges:
        """Like `fetch_range`, but one `RangeResult` per distinct value tuple of the labels
        `by` (a label a series lacks counts as ""): the answer to a batched query such as
        `sum by (namespace) (m{namespace=~"a|b"})`, split back per target. Each group is
        judged exactly as `fetch_range` judges a query answering that group's series alone.
        A failed request gives one ERROR `RangeResult` for all groups.
        """
        start_s, end_s = _unix_seconds(start, "start"), _unix_seconds(end, "end")
        if not (step_seconds > 0 and math.isfinite(step_seconds)):
            raise ValueError(f"step_seconds must be a positive number, got {step_seconds}")
        if end_s < start_s:
            raise ValueError("end is before start")
        n_steps = math.floor((end_s - start_s) / step_seconds + 1e-9) + 1
        grid = frozen_array(start_s + np.arange(n_steps, dtype=np.float64) * step_seconds)
        groups: dict[tuple[str, ...], SeriesSums] = {}

        for first in range(0, n_steps, self._max_points):
            last = min(n_steps, first + self._max_points) - 1
            try:
                result = await self._call(
                    self._query_range_blocking,
                    query,
                    float(grid[first]),
                    float(grid[last]),
                    step_seconds,
                )
                chunk = parse_matrix(result)
            except Exception as exc:  # every failure becomes a value, not a raise
                unreachable = isinstance(
                    exc, (requests.ConnectionError, requests.Timeout, TimeoutError)
                )
                message = f"range query failed: {self._describe(exc)}"
                return error_range(grid, message, unreachable=unreachable)
            for labels, ts, samples in chunk:
                found = dict(labels)
                key = tuple(found.get(name, "") for name in by)
                acc = groups.get(key)
                if acc is None:
                    acc = groups[key] = SeriesSums(n_steps)
                acc.add(labels, np.rint((ts - start_s) / step_seconds).astype(np.int64), samples)
        return GroupedRanges(grid, {key: acc.result(grid) for key, acc in groups.items()})

    async def fetch_instant(self, query: str, at: datetime) -> float | None:
        """Evaluate `query` at `at`; the sum over the returned series.

        Returns None when the query matched no series, NaN when a sample is NaN/Inf. Raises
        PrometheusUnavailable (unreachable, timeout, 5xx) or PrometheusQueryError (rejected
        query, unusable answer), each with a one-line message.
        """
        at_s = _unix_seconds(at, "at")
        try:
            result = await self._call(self._query_instant_blocking, query, at_s)
            samples = parse_instant(result)
        except Exception as exc:
            raise self._classify(exc, "instant query failed: ") from None
        if not samples:
            return None
        if not all(math.isfinite(v) for v in samples):
            return math.nan
        return math.fsum(samples)

    async def check(self) -> None:
        """Raise PrometheusUnavailable unless the server answers a trivial query."""
        try:
            result = await self._call(self._query_instant_blocking, "vector(1)", None)
            samples = parse_instant(result)
        except Exception as exc:
            raise PrometheusUnavailable(
                f"Prometheus at {self._display_url} is unavailable: {self._describe(exc)}"
            ) from None
        if samples != [1.0]:
            raise PrometheusUnavailable(
                f"Prometheus at {self._display_url} gave an unexpected answer to vector(1)"
            )

    # ----------------------------------------------------------------- blocking calls

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise PrometheusError("the Prometheus source is closed")
        return await asyncio.wait_for(
            asyncio.to_thread(func, *args), timeout=self._deadline_seconds
        )

    def _server_timeout(self) -> str:
        return repr(float(self.settings.timeout_seconds))

    def _query_range_blocking(
        self, query: str, start_s: float, end_s: float, step_seconds: float
    ) -> Any:
        # start/end go in `params` to keep millisecond precision (the client rounds to seconds).
        return self._client.custom_query_range(
            query=query,
            start_time=datetime.fromtimestamp(start_s).astimezone(),
            end_time=datetime.fromtimestamp(end_s).astimezone(),
            step=repr(float(step_seconds)),
            params={
                "start": f"{start_s:.3f}",
                "end": f"{end_s:.3f}",
                "timeout": self._server_timeout(),
            },
            timeout=self.settings.timeout_seconds,
        )

    def _query_instant_blocking(self, query: str, at_s: float | None) -> Any:
        params = {"timeout": self._server_timeout()}
        if at_s is not None:
            params["time"] = f"{at_s:.3f}"
        return self._client.custom_query(
            query=query, params=params, timeout=self.settings.timeout_seconds
        )

    # ----------------------------------------------------------------- error messages

    def _describe(self, exc: BaseException) -> str:
        return _one_line(_describe_error(exc, self._display_url, self.settings), self._auth)

    def _classify(self, exc: BaseException, prefix: str) -> PrometheusError:
        message = prefix + self._describe(exc)
        if isinstance(exc, PrometheusApiClientException):
            code = _http_status(str(exc))
            if code is not None and code < 500:
                return PrometheusQueryError(message)
            return PrometheusUnavailable(message)
        if isinstance(exc, (requests.ConnectionError, requests.Timeout, TimeoutError)):
            return PrometheusUnavailable(message)
        return PrometheusQueryError(message)


# --------------------------------------------------------------------------- helpers


class _SecretFileError(PrometheusError):
    """A credential file could not be read."""


class _FileAuth(requests.auth.AuthBase):
    """Sets Authorization from files read at request time; remembers secrets to redact them."""

    def __init__(self, settings: PrometheusSettings) -> None:
        self._settings = settings
        self._seen: set[str] = set()

    @property
    def active(self) -> bool:
        settings = self._settings
        return settings.bearer_token_file is not None or settings.basic_auth_username is not None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        settings = self._settings
        if settings.bearer_token_file is not None:
            token = self._read(settings.bearer_token_file, "bearer token")
            request.headers["Authorization"] = f"Bearer {token}"
        elif settings.basic_auth_username is not None and settings.basic_auth_password_file:
            password = self._read(settings.basic_auth_password_file, "basic-auth password")
            pair = f"{settings.basic_auth_username}:{password}".encode()
            credentials = base64.b64encode(pair).decode("ascii")
            self._seen.add(credentials)
            request.headers["Authorization"] = f"Basic {credentials}"
        return request

    def _read(self, path: str | os.PathLike[str], what: str) -> str:
        try:
            with open(path, encoding="utf-8") as secret_file:
                secret = secret_file.read().strip()
        except OSError as exc:
            message = f"cannot read {what} file {os.fspath(path)}: {exc.strerror}"
            raise _SecretFileError(message) from None
        if not secret:
            raise _SecretFileError(f"{what} file {os.fspath(path)} is empty")
        if len(self._seen) > 16:  # bound the memory of rotated secrets
            self._seen.clear()
        self._seen.add(secret)
        return secret

    def redact(self, text: str) -> str:
        for secret in tuple(self._seen):  # tuple(): worker threads may add meanwhile
            text = text.replace(secret, "<redacted>")
        return text


def _unix_seconds(moment: datetime, name: str) -> float:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return round(moment.timestamp(), 3)


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _one_line(text: str, auth: _FileAuth) -> str:
    text = " ".join(auth.redact(text).split())
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 1] + "…"
    return text


_STATUS_RE: Final = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)


def _http_status(client_message: str) -> int | None:
    match = _STATUS_RE.match(client_message)
    return int(match.group(1)) if match else None


def _describe_http_error(client_message: str) -> str:
    """`HTTP Status Code 400 (b'{"status":"error",...}')` -> `HTTP 400: bad_data: ...`."""
    match = _STATUS_RE.match(client_message)
    if not match:
        return client_message
    code, body_repr = match.groups()
    body = body_repr
    try:
        raw_body = ast.literal_eval(body_repr)
        body = raw_body.decode("utf-8", "replace") if isinstance(raw_body, bytes) else body_repr
        payload = json.loads(body)
        if isinstance(payload, dict) and "error" in payload:
            return f"HTTP {code}: {payload.get('errorType', 'error')}: {payload['error']}"
    except (ValueError, SyntaxError):
        pass
    return f"HTTP {code}: {body[:200]}" if body.strip() else f"HTTP {code}"


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes, contexts, urllib3 reasons and exception args, outermost first."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        chain.append(current)
        for linked in (getattr(current, "reason", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                stack.append(linked)
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return chain


def _root_cause(exc: BaseException) -> str:
    chain = _exception_chain(exc)
    for item in chain:
        if isinstance(item, ssl.SSLError):
            return str(item)
    causes = [item.strerror for item in chain if isinstance(item, OSError) and item.strerror]
    return causes[-1] if causes else type(chain[-1]).__name__


def _describe_error(exc: BaseException, url: str, settings: PrometheusSettings) -> str:
    timeout = settings.timeout_seconds
    if isinstance(exc, PrometheusError):
        return str(exc)
    if isinstance(exc, PrometheusApiClientException):
        return _describe_http_error(str(exc))
    if type(exc) is TimeoutError:  # asyncio.wait_for's deadline; requests' own are wrapped
        return f"no answer from {url} within {2 * timeout + 1:g}s"
    if isinstance(exc, requests.ConnectTimeout):
        return f"timed out connecting to {url} after {timeout:g}s"
    if isinstance(exc, requests.ReadTimeout) or (
        isinstance(exc, requests.ConnectionError)
        and any(isinstance(e, urllib3.exceptions.ReadTimeoutError) for e in _exception_chain(exc))
    ):
        return f"no response from {url} within {timeout:g}s"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error talking to {url}: {_root_cause(exc)}"
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return f"invalid JSON in the answer from {url}"
    if isinstance(exc, requests.ConnectionError):
        return f"cannot connect to {url}: {_root_cause(exc)}"
    if isinstance(exc, requests.RequestException):
        return f"request to {url} failed: {type(exc).__name__}"
    if isinstance(exc, AnswerShapeError):
        return f"unexpected answer from {url}: {exc}"
    return f"{type(exc).__name__}: {exc}"
