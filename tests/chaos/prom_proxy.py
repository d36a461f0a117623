"""A Prometheus HTTP API server that injects faults, in front of a real Prometheus or alone.

``PrometheusFaultProxy(upstream=url)`` forwards ``/api/v1/query_range`` and ``/api/v1/query``
to a real Prometheus and rewrites its JSON answer; ``PrometheusFaultProxy(series=fn)`` answers
alone from a deterministic function of (namespace, timestamps), in the same JSON format
(``{"status": "success", "data": {"resultType": "matrix", "result": [...]}}``), so the code
under test always goes through the real ``PrometheusSource`` adapter and its HTTP client.

Faults are set per namespace (taken from the query's ``namespace="..."`` matcher) or for every
query (namespace ``None``), and stay until changed. :meth:`PrometheusFaultProxy.set_query_fault`
narrows one to the ``sum`` queries of one metric of one namespace (the usage, queue or running
query of a target, not its siblings). The kinds:

- ``down``: the connection is closed without an answer (a crashed server, a reset); a truly
  closed port is :meth:`PrometheusFaultProxy.stop` or any free port;
- ``slow``: the answer comes ``slow_seconds`` late (past the client's timeout);
- ``hung``: the connection is accepted and the request read, but no answer ever comes
  (a wedged query engine); only the client's own timeout ends it;
- ``5xx``: HTTP 503 with a Prometheus error body;
- ``bad_query``: HTTP 422 ``bad_data`` (a rejected query);
- ``bad_json``: HTTP 200 with a body that is not JSON;
- ``empty``: success, no series;
- ``nan`` / ``inf``: every sample in the answer is ``NaN`` / ``+Inf``;
- ``partial``: half of the series lose their samples from the middle of the range on (a pod
  whose scrapes stopped); a single series (a query that sums server-side) gets gaps instead,
  its newest sample kept;
- ``stale``: no sample newer than ``stale_seconds`` before the query's end (scraping stopped).
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import numpy as np
import numpy.typing as npt
from aiohttp import web

PROMETHEUS_FAULTS: Final = (
    "down",
    "slow",
    "hung",
    "5xx",
    "bad_query",
    "bad_json",
    "empty",
    "nan",
    "inf",
    "partial",
    "stale",
)
BAD_DATA_FAULTS: Final = frozenset(PROMETHEUS_FAULTS) - {"partial"}
"""Faults after which the controller has no usable new data (``partial`` still has some)."""

SeriesFn = Callable[..., Sequence[tuple[dict[str, str], Any]]]
"""(namespace, timestamps) -> [(labels, values)]; an empty list: no such series. With
``by_metric=True`` the proxy passes the query's metric name too: (namespace, timestamps,
metric)."""

_NAMESPACE: Final = re.compile(r'namespace(=~?)"((?:[^"\\]|\\.)*)"')
_GROUPED: Final = re.compile(r"^sum\s+by\s*\(\s*namespace\s*\)")
_LATEST: Final = re.compile(r"^max(\s+by\s*\(\s*namespace\s*\))?\s*\(\s*timestamp\s*\(")
"""The newest sample's timestamp (reconcile's freshness query), per target when grouped."""
_COUNT: Final = re.compile(r"^count(\s+by\s*\(\s*namespace\s*\))?\s*\(")
"""The number of series (pods) reporting, per target when grouped."""
_METRIC: Final = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
"""The metric of a query: the first name followed by a label matcher."""


@dataclass(frozen=True)
class PromFault:
    kind: str
    slow_seconds: float = 2.0
    stale_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.kind not in PROMETHEUS_FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(PROMETHEUS_FAULTS)}")


@dataclass
class _Stats:
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class PrometheusFaultProxy:
    """An aiohttp server on a free loopback port; see the module docstring."""

    def __init__(
        self,
        *,
        upstream: str | None = None,
        series: SeriesFn | None = None,
        by_metric: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if (upstream is None) == (series is None):
            raise ValueError("give exactly one of upstream and series")
        self.upstream = upstream.rstrip("/") if upstream else None
        self.series = series
        self.by_metric = by_metric
        self.ssl_context = ssl_context
        """Serve HTTPS with this context (a self-signed certificate in the TLS tests)."""
        self.faults: dict[str | None, PromFault] = {}
        self.query_faults: dict[tuple[str, str], PromFault] = {}
        """(namespace, metric) -> the fault of that namespace's ``sum`` queries of it."""
        self.stats = _Stats()
        self.seen_headers: list[dict[str, str]] = []
        """Request headers, in order (tests check what the client sent)."""
        self.required_authorization: str | None = None
        """When set, requests without exactly this Authorization header get 401."""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._slow: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    async def start(self) -> PrometheusFaultProxy:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query_range", self._query_range)
        app.router.add_route("*", "/api/v1/query", self._query)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port or 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self._port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        if self.upstream is not None and self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def stop(self) -> None:
        """Stop listening (the port is then closed: ``down`` for real); restartable on the
        same port with :meth:`start`."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def close(self) -> None:
        await self.stop()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> PrometheusFaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ faults

    def set_fault(self, kind: str | None, namespace: str | None = None, **options: float) -> None:
        """Inject ``kind`` for ``namespace`` (every query when ``None``); ``None`` clears."""
        if kind is None:
            self.faults.pop(namespace, None)
        else:
            self.faults[namespace] = PromFault(kind, **options)

    def set_query_fault(
        self, kind: str | None, namespace: str, metric: str, **options: float
    ) -> None:
        """Inject ``kind`` into ``namespace``'s ``sum(...)`` / ``sum by (namespace) (...)``
        queries of ``metric`` only (its freshness and pod-count queries answer as before);
        ``None`` clears. A batched query that includes the namespace fails whole, as a real
        server fails a whole request."""
        if kind is None:
            self.query_faults.pop((namespace, metric), None)
        else:
            self.query_faults[(namespace, metric)] = PromFault(kind, **options)

    def clear(self) -> None:
        self.faults.clear()
        self.query_faults.clear()

    def _faults_for(self, namespaces: Sequence[str], query: str) -> dict[str | None, PromFault]:
        found: dict[str | None, PromFault] = {}
        metric = _metric(query) if query.lstrip().startswith("sum") else None
        for namespace in namespaces or [None]:
            fault = None
            if metric is not None and namespace is not None:
                fault = self.query_faults.get((namespace, metric))
            if fault is None:
                fault = self.faults.get(namespace, self.faults.get(None))
            if fault is not None:
                found[namespace] = fault
        return found

    # ------------------------------------------------------------------ handlers

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    async def _query_range(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, instant=False)

    async def _query(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, instant=True)

    async def _serve(self, request: web.Request, *, instant: bool) -> web.StreamResponse:
        self.stats.requests += 1
        self.seen_headers.append(dict(request.headers))
        if self.required_authorization is not None and (
            request.headers.get("Authorization") != self.required_authorization
        ):
            return _error(401, "unauthorized", "missing or wrong credentials")
        params = await self._params(request)
        query = params.get("query", "")
        namespaces = _namespaces(query)
        faults = self._faults_for(namespaces, query)
        for fault in faults.values():
            self.stats.faults[fault.kind] = self.stats.faults.get(fault.kind, 0) + 1
        # A failing server fails the whole request, whichever targets a batch was for.
        for fault in faults.values():
            early = await self._early_fault(request, fault)
            if early is not None:
                return early
        payload = await self._answer(params, namespaces, instant=instant)
        if faults and payload.get("status") == "success" and not instant:
            payload = _rewrite(payload, faults, namespaces, params)
        return web.json_response(payload)

    async def _early_fault(
        self, request: web.Request, fault: PromFault
    ) -> web.StreamResponse | None:
        if fault.kind == "down":
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=500)  # never reaches the client
        if fault.kind == "slow":
            await asyncio.sleep(fault.slow_seconds)
            return None
        if fault.kind == "hung":
            # Until the client gives up and closes the connection (the handler is then
            # cancelled), or the server stops.
            await asyncio.Event().wait()
        if fault.kind == "5xx":
            return _error(503, "unavailable", "injected: the query engine is overloaded")
        if fault.kind == "bad_query":
            return _error(422, "bad_data", "injected: parse error at char 1")
        if fault.kind == "bad_json":
            return web.Response(status=200, text="<html>gateway</html>", content_type="text/html")
        return None

    async def _answer(
        self, params: dict[str, str], namespaces: Sequence[str], *, instant: bool
    ) -> dict[str, Any]:
        path = "/api/v1/query" if instant else "/api/v1/query_range"
        if self.upstream is not None:
            assert self._session is not None
            async with self._session.get(self.upstream + path, params=params) as response:
                result: dict[str, Any] = await response.json(content_type=None)
                return result
        assert self.series is not None
        query = params.get("query", "").strip()
        metric = _metric(query) or ""

        def series(namespace: str, ts: npt.NDArray[np.float64]) -> list[tuple[dict[str, str], Any]]:
            assert self.series is not None
            if self.by_metric:
                return list(self.series(namespace, ts, metric))
            return list(self.series(namespace, ts))

        if instant:
            at = float(params.get("time", "0") or 0)
            rows = [r for ns in namespaces for r in series(ns, np.array([at]))]
            total = float(sum(float(np.asarray(v)[0]) for _, v in rows))
            vector = [{"metric": {}, "value": [at, str(total)]}]
            return {"status": "success", "data": {"resultType": "vector", "result": vector}}
        start, end = float(params["start"]), float(params["end"])
        step = float(params["step"])
        n = math.floor((end - start) / step + 1e-9) + 1
        ts = start + np.arange(n, dtype=np.float64) * step
        rows: list[tuple[dict[str, str], Any]] = []
        grouped = _GROUPED.match(query)
        latest, counting = _LATEST.match(query), _COUNT.match(query)
        for namespace in namespaces:
            found = series(namespace, ts)
            if not found:
                continue
            finite = np.isfinite([np.asarray(v, dtype=np.float64) for _, v in found])
            if latest or counting:
                # A series sampled at every step: its newest sample is the step's own time.
                by = latest.group(1) if latest else counting.group(1) if counting else None
                value = np.where(finite.any(axis=0), ts, np.nan) if latest else finite.sum(axis=0)
                rows.append(({"namespace": namespace} if by else {}, value))
            elif grouped or query.startswith("sum("):
                total = np.sum([np.asarray(v, dtype=np.float64) for _, v in found], axis=0)
                rows.append(({"namespace": namespace} if grouped else {}, total))
            else:
                rows.extend(found)
        result = [
            {
                "metric": dict(labels),
                "values": [
                    [float(t), _fmt(v)]
                    for t, v in zip(ts, np.asarray(values, dtype=np.float64), strict=True)
                ],
            }
            for labels, values in rows
        ]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"status": "error", "errorType": error_type, "error": message}, status=status
    )


def _rewrite(
    payload: dict[str, Any],
    faults: dict[str | None, PromFault],
    namespaces: Sequence[str],
    params: dict[str, str],
) -> dict[str, Any]:
    """Apply each namespace's data fault to that namespace's series (a series without a
    namespace label belongs to the query's only namespace)."""
    data = payload.get("data") or {}
    groups: dict[str | None, list[dict[str, Any]]] = {}
    default = namespaces[0] if len(namespaces) == 1 else None
    for item in data.get("result") or []:
        namespace = (item.get("metric") or {}).get("namespace", default)
        groups.setdefault(namespace, []).append(item)
    if default is None and None in faults:
        groups_faults = {ns: faults[None] for ns in groups}
    else:
        groups_faults = {ns: faults[ns] for ns in groups if ns in faults}
    for namespace, fault in groups_faults.items():
        groups[namespace] = _rewrite_series(groups[namespace], fault, params)
    series = [item for items in groups.values() for item in items]
    return {**payload, "data": {**data, "result": series}}


def _rewrite_series(
    series: list[dict[str, Any]], fault: PromFault, params: dict[str, str]
) -> list[dict[str, Any]]:
    kind = fault.kind
    if kind == "empty":
        series = []
    elif kind in ("nan", "inf"):
        text = "NaN" if kind == "nan" else "+Inf"
        series = [{**s, "values": [[t, text] for t, _ in s["values"]]} for s in series]
    elif kind == "stale":
        cutoff = float(params["end"]) - fault.stale_seconds
        series = [
            {**s, "values": [p for p in s["values"] if float(p[0]) <= cutoff]} for s in series
        ]
        series = [s for s in series if s["values"]]
    elif kind == "partial" and len(series) == 1:
        # One series (a query that sums server-side): scrape gaps, the newest sample kept.
        values = series[0]["values"]
        series = [{**series[0], "values": values[::-1][::2][::-1]}]
    elif kind == "partial" and series:
        start, end = float(params["start"]), float(params["end"])
        middle = (start + end) / 2
        cut = max(1, len(series) // 2)
        series = [
            {**s, "values": [p for p in s["values"] if float(p[0]) < middle]} if i < cut else s
            for i, s in enumerate(series)
        ]
        series = [s for s in series if s["values"]]
    return series


def _metric(query: str) -> str | None:
    found = _METRIC.search(query)
    return found.group(1) if found else None


def _namespaces(query: str) -> list[str]:
    """Namespaces a query asks for: `namespace="x"`, or the alternatives of
    `namespace=~"a|b"` (a batched query: PromQL-escaped, then RE2-escaped)."""
    found: list[str] = []
    for op, raw in _NAMESPACE.findall(query):
        text = _unescape(raw)
        if op == "=~":
            found += [_unescape(part) for part in re.split(r"(?<!\\)\|", text)]
        else:
            found.append(text)
    return list(dict.fromkeys(found))


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: m.group(1), text)
