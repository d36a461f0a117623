"""What the controller publishes: Prometheus gauges on ``/metrics``, and ``/healthz``/``/readyz``.

The metrics live in their own ``CollectorRegistry`` (never the process-global one), so tests
and several controllers in one process do not collide. This module only stores and serves
values computed elsewhere; it decides nothing. :meth:`ControllerMetrics.published` reads the
stored per-target values back (the built-in External Metrics API serves them from there).

A forecast is served only while its data is fresh: each forecast series carries the time its
data goes stale (newest sample + ``staleAfter``), and the store withdraws it then, from
``/metrics`` and from :meth:`~ControllerMetrics.published` alike, whether or not a cycle runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics import MetricWrapperBase

__all__ = [
    "PATCH_RESULTS",
    "ControllerMetrics",
    "HealthState",
    "PublishedValue",
    "SignalFigures",
    "TargetFigures",
    "make_app",
    "start_http_server",
]

PATCH_RESULTS: Final = ("applied", "conflict", "failed", "dry_run")

_TARGET_LABELS: Final = ("target", "target_namespace", "hpa")
"""The target's labels on every per-target series. Its namespace is ``target_namespace``, not
``namespace``: a scrape sets ``namespace`` to the controller's own namespace (and renames ours to
``exported_namespace``) unless ``honorLabels`` is on, and a Prometheus that enforces namespace
labels rewrites it regardless; a label of our own survives both."""
_SIGNAL_LABELS: Final = (*_TARGET_LABELS, "signal")


@dataclass(frozen=True)
class SignalFigures:
    """One signal's published values after a cycle; ``None`` leaves a gauge unset."""

    name: str
    data_ok: bool
    horizon_seconds: float
    quantile: float
    mean: float | None = None
    upper: float | None = None
    abs_error: float | None = None
    """Rolling mean absolute error of the forecasts that came due."""
    coverage: float | None = None
    """Rolling share of due actuals at or below the upper quantile."""
    peak_coverage: float | None = None
    """Rolling share of due windows whose realised peak was at or below the window-peak bound
    (what the decision takes)."""
    fresh_until: datetime | None = None
    """When the forecast's data goes stale; from then on ``mean`` and ``upper`` are withdrawn.
    ``None``: no expiry (the caller judges freshness itself)."""


@dataclass(frozen=True)
class TargetFigures:
    """One target's published values after a cycle."""

    target: str
    namespace: str
    hpa: str
    recommended_min_replicas: int | None
    applied_min_replicas: int | None
    base_min_replicas: int | None
    signals: tuple[SignalFigures, ...] = ()
    at: datetime | None = None
    """When the cycle computed these values; ``None``: when they are published."""
    owner: str | None = None
    """``Kind/name`` of another controller owning the HPA (never patched), else ``None``."""
    owner_reason: str | None = None
    """Why it is left alone: ``OwnedByKEDA`` or ``OwnedByController``."""
    overlaps: tuple[tuple[str, bool], ...] = ()
    """Other targets whose pods overlap this one's: (their id, whether certainly)."""


@dataclass(frozen=True)
class PublishedValue:
    """One stored per-target gauge value, read back by :meth:`ControllerMetrics.published`."""

    metric: str
    labels: Mapping[str, str]
    """Every label of the series (``target``, ``target_namespace``, ``hpa``, and per signal
    ``signal``, ``horizon_seconds``, ``quantile`` as the metric has them)."""
    value: float
    at: datetime
    """When the cycle that computed the value ran."""


class ControllerMetrics:
    """Every gauge and counter of the controller, on one private registry."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.clock = clock
        """The time forecasts are judged fresh against (the controller's clock)."""
        r = self.registry
        self.forecast_mean = Gauge(
            "predictive_scaler_forecast_mean",
            "Mean forecast of the signal at the horizon (signal units, summed over pods).",
            (*_SIGNAL_LABELS, "horizon_seconds"),
            registry=r,
        )
        self.forecast_upper = Gauge(
            "predictive_scaler_forecast_upper",
            "Upper bound at the quantile of the demand peak over the horizon (what capacity "
            "covers; calibrated on the window peak).",
            (*_SIGNAL_LABELS, "horizon_seconds", "quantile"),
            registry=r,
        )
        self.recommended = Gauge(
            "predictive_scaler_recommended_min_replicas",
            "minReplicas the decision asks for (also in dry-run and on followers).",
            _TARGET_LABELS,
            registry=r,
        )
        self.applied = Gauge(
            "predictive_scaler_applied_min_replicas",
            "spec.minReplicas of the HPA after the cycle.",
            _TARGET_LABELS,
            registry=r,
        )
        self.base = Gauge(
            "predictive_scaler_base_min_replicas",
            "The user's own minReplicas, restored when the target is removed.",
            _TARGET_LABELS,
            registry=r,
        )
        self.abs_error = Gauge(
            "predictive_scaler_forecast_abs_error",
            "Rolling mean absolute error of the mean forecasts that came due (live).",
            _SIGNAL_LABELS,
            registry=r,
        )
        self.coverage = Gauge(
            "predictive_scaler_forecast_coverage",
            "Rolling share of due actuals at or below the upper-quantile forecast (live).",
            _SIGNAL_LABELS,
            registry=r,
        )
        self.peak_coverage = Gauge(
            "predictive_scaler_forecast_peak_coverage",
            "Rolling share of due windows (warm-up plus one interval) whose realised peak was at "
            "or below the window-peak bound the decision took (live).",
            _SIGNAL_LABELS,
            registry=r,
        )
        self.data_ok = Gauge(
            "predictive_scaler_data_ok",
            "1 when the signal's data was usable this cycle, 0 when missing, stale or short.",
            _SIGNAL_LABELS,
            registry=r,
        )
        self.owned_elsewhere = Gauge(
            "predictive_scaler_hpa_owned_elsewhere",
            "1 while the target's HPA is owned by another controller (a KEDA ScaledObject...): "
            "forecast and published, never patched.",
            (*_TARGET_LABELS, "reason", "owner"),
            registry=r,
        )
        self.target_overlap = Gauge(
            "predictive_scaler_target_overlap",
            "1 while the target's pods overlap another target's (other): certain=true holds "
            "minReplicas (AmbiguousSelector), certain=false cannot be told from the selectors.",
            (*_TARGET_LABELS, "other", "certain"),
            registry=r,
        )
        self.cycle_duration = Histogram(
            "predictive_scaler_cycle_duration_seconds",
            "Duration of one target's cycle.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.cycle_errors = Counter(
            "predictive_scaler_cycle_errors",
            "Cycle failures by kind (prometheus, kube, fit, internal...).",
            ("target", "kind"),
            registry=r,
        )
        self.patches = Counter(
            "predictive_scaler_patches",
            "HPA patches by result (applied, conflict, failed, dry_run).",
            ("target", "result"),
            registry=r,
        )
        self.config_valid = Gauge(
            "predictive_scaler_config_valid",
            "1 when the last configuration read was valid, 0 when it was rejected.",
            registry=r,
        )
        self.config_reloads = Counter(
            "predictive_scaler_config_reloads",
            "Configuration loads by result (applied, rejected).",
            ("result",),
            registry=r,
        )
        self.config_watch_restarts = Counter(
            "predictive_scaler_config_watch_restarts",
            "ConfigMap watch requests started again, by why the last one ended (closed, "
            "expired, disconnected, error, unauthorized, forbidden).",
            ("reason",),
            registry=r,
        )
        self.restores = Counter(
            "predictive_scaler_restores",
            "Attempts to give an HPA with no enabled target its base back, by result "
            "(restored, clean, gone, owned, failed).",
            ("result",),
            registry=r,
        )
        self.is_leader = Gauge(
            "predictive_scaler_is_leader",
            "1 while this instance holds the leader Lease (only the leader patches).",
            registry=r,
        )
        self.targets = Gauge(
            "predictive_scaler_targets", "Enabled targets in the configuration.", registry=r
        )
        # Each target's series -> its labelled child: looking a child up by its labels is a
        # lock and a tuple build per gauge, eighteen thousand a cycle at 1,000 targets.
        self._series: dict[str, dict[tuple[MetricWrapperBase, tuple[str, ...]], Gauge]] = {}
        # Read-only copies of the per-target values for published(): metric -> its label names,
        # (metric, label values) -> (value, when).
        self._label_names: dict[MetricWrapperBase, tuple[str, ...]] = {
            self.forecast_mean: (*_SIGNAL_LABELS, "horizon_seconds"),
            self.forecast_upper: (*_SIGNAL_LABELS, "horizon_seconds", "quantile"),
            self.recommended: _TARGET_LABELS,
            self.applied: _TARGET_LABELS,
            self.base: _TARGET_LABELS,
            self.abs_error: _SIGNAL_LABELS,
            self.coverage: _SIGNAL_LABELS,
            self.peak_coverage: _SIGNAL_LABELS,
            self.data_ok: _SIGNAL_LABELS,
            self.target_overlap: (*_TARGET_LABELS, "other", "certain"),
        }
        self._values: dict[tuple[MetricWrapperBase, tuple[str, ...]], tuple[float, datetime]] = {}
        self._published_at: datetime = datetime.now(UTC)
        self._fresh_until: dict[
            tuple[MetricWrapperBase, tuple[str, ...]], tuple[str, datetime]
        ] = {}
        """Forecast series -> (their target, when they go stale)."""

    # ---------------------------------------------------------------- per target

    def _set(
        self, target: str, metric: MetricWrapperBase, labels: tuple[str, ...], value: float | None
    ) -> None:
        known = self._series.setdefault(target, {})
        key = (metric, labels)
        if value is None:
            self._fresh_until.pop(key, None)
            if known.pop(key, None) is not None:
                metric.remove(*labels)
                self._values.pop(key, None)
            return
        gauge = known.get(key)
        if gauge is None:
            child = metric.labels(*labels)
            assert isinstance(child, Gauge)
            gauge = known[key] = child
        gauge.set(value)
        self._values[key] = (value, self._published_at)

    def publish_target(self, figures: TargetFigures) -> None:
        """Set a target's gauges from one cycle; label sets it no longer has are removed."""
        t = figures.target
        self._published_at = figures.at or datetime.now(UTC)
        stale = set(self._series.get(t, {}))
        ids = (t, figures.namespace, figures.hpa)
        fresh: set[tuple[MetricWrapperBase, tuple[str, ...]]] = set()

        def put(
            metric: Gauge,
            labels: tuple[str, ...],
            value: float | None,
            fresh_until: datetime | None = None,
        ) -> None:
            if fresh_until is not None and fresh_until <= self._published_at:
                value = None  # a forecast on stale data is no forecast
            self._set(t, metric, labels, value)
            if value is not None:
                fresh.add((metric, labels))
                if fresh_until is not None:
                    self._fresh_until[(metric, labels)] = (t, fresh_until)

        put(self.recommended, ids, _maybe(figures.recommended_min_replicas))
        put(self.applied, ids, _maybe(figures.applied_min_replicas))
        put(self.base, ids, _maybe(figures.base_min_replicas))
        if figures.owner is not None:
            owned = (*ids, figures.owner_reason or "", figures.owner)
            put(self.owned_elsewhere, owned, 1.0)
        for other, certain in figures.overlaps:
            put(self.target_overlap, (*ids, other, "true" if certain else "false"), 1.0)
        for s in figures.signals:
            sig = (*ids, s.name)
            horizon = f"{s.horizon_seconds:g}"
            put(self.forecast_mean, (*sig, horizon), s.mean, s.fresh_until)
            put(self.forecast_upper, (*sig, horizon, f"{s.quantile:g}"), s.upper, s.fresh_until)
            put(self.abs_error, sig, s.abs_error)
            put(self.coverage, sig, s.coverage)
            put(self.peak_coverage, sig, s.peak_coverage)
            put(self.data_ok, sig, 1.0 if s.data_ok else 0.0)
        for metric, labels in stale - fresh:
            self._set(t, metric, labels, None)

    def remove_target(self, target: str) -> None:
        """Forget every gauge of a target removed from the configuration."""
        for metric, labels in self._series.pop(target, {}):
            metric.remove(*labels)
            self._values.pop((metric, labels), None)
            self._fresh_until.pop((metric, labels), None)

    def withdraw_stale(self) -> None:
        """Withdraw every forecast whose data has gone stale by the clock (also run before each
        read, so a forecast disappears on time even when no cycle runs)."""
        now = self.clock()
        for key, (target, until) in list(self._fresh_until.items()):
            if until <= now:
                self._set(target, key[0], key[1], None)

    def count_cycle_error(self, target: str, kind: str) -> None:
        self.cycle_errors.labels(target, kind).inc()

    def count_patch(self, target: str, result: str) -> None:
        if result not in PATCH_RESULTS:
            raise ValueError(f"unknown patch result {result!r}")
        self.patches.labels(target, result).inc()

    # ---------------------------------------------------------------- controller-wide

    def set_config_valid(self, valid: bool) -> None:
        self.config_valid.set(1 if valid else 0)

    def count_config_reload(self, result: str) -> None:
        self.config_reloads.labels(result).inc()

    def count_config_watch_restart(self, reason: str) -> None:
        self.config_watch_restarts.labels(reason).inc()

    def count_restore(self, result: str) -> None:
        self.restores.labels(result).inc()

    def set_leader(self, leader: bool) -> None:
        self.is_leader.set(1 if leader else 0)

    def set_targets(self, count: int) -> None:
        self.targets.set(count)

    def generate_latest(self) -> bytes:
        self.withdraw_stale()
        return _generate_latest(self.registry)

    def published(self, metric: str) -> list[PublishedValue]:
        """The current values of one per-target gauge (by its name on ``/metrics``, e.g.
        ``predictive_scaler_forecast_upper``), as last published; ``[]`` for a name that is
        not a per-target gauge. A copy: changing it changes nothing here."""
        self.withdraw_stale()
        wanted = [(m, names) for m, names in self._label_names.items() if _name(m) == metric]
        values = []
        for gauge, names in wanted:
            for (m, labels), (value, at) in self._values.items():
                if m is gauge:
                    named = dict(zip(names, labels, strict=True))
                    values.append(PublishedValue(metric, named, value, at))
        return sorted(values, key=lambda v: tuple(sorted(v.labels.items())))


def _name(metric: MetricWrapperBase) -> str:
    return str(next(iter(metric.describe())).name)


def _maybe(value: int | None) -> float | None:
    return None if value is None else float(value)


@dataclass
class HealthState:
    """What ``/healthz`` and ``/readyz`` answer from; the loop updates it."""

    max_tick_age_seconds: float = 120.0
    """The loop is alive while its last tick is younger than this."""
    monotonic: Callable[[], float] = field(default=time.monotonic)
    last_tick: float | None = None
    config_loaded: bool = False
    first_cycle_done: bool = False
    checks: dict[str, Callable[[], str | None]] = field(default_factory=dict)
    """Named liveness checks beyond the loop's tick (the fit pool); each returns why it
    fails, or ``None``."""

    def tick(self) -> None:
        self.last_tick = self.monotonic()

    def add_check(self, name: str, check: Callable[[], str | None]) -> None:
        self.checks[name] = check

    def problems(self) -> list[str]:
        """``name: why`` of every failing check."""
        return [f"{name}: {why}" for name, check in self.checks.items() if (why := check())]

    @property
    def alive(self) -> bool:
        return (
            self.last_tick is not None
            and self.monotonic() - self.last_tick <= self.max_tick_age_seconds
        )

    @property
    def ready(self) -> bool:
        return self.config_loaded and self.first_cycle_done


def make_app(metrics: ControllerMetrics, health: HealthState) -> web.Application:
    """``/metrics`` (Prometheus text format), ``/healthz`` (loop alive), ``/readyz``."""

    async def serve_metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.generate_latest())
        # CONTENT_TYPE_LATEST carries a charset; aiohttp wants it in the header verbatim.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_request: web.Request) -> web.Response:
        if not health.alive:
            return web.Response(status=503, text="loop not ticking\n")
        problems = health.problems()
        if problems:
            return web.Response(status=503, text="".join(f"{p}\n" for p in problems))
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        if health.ready:
            return web.Response(text="ready\n")
        reason = "no valid configuration yet" if not health.config_loaded else "no cycle yet"
        return web.Response(status=503, text=f"{reason}\n")

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_http_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app``; the caller awaits ``runner.cleanup()`` to stop. Port 0 picks a free one
    (see :func:`bound_port`)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a started runner listens on (useful with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the server listens on no TCP port")
