"""The live controller: configuration, leader election, the cycle loop, signals, shutdown.

:class:`Controller` holds the per-target reconcilers and the shared clients and runs one
step at a time (:meth:`Controller.run_due`, :meth:`Controller.renew_leadership`,
:meth:`Controller.load_config_text`), so tests drive it with a fake clock and no sleeping.
:func:`run_controller` wires it to the real world: background tasks (config watch, lease
renewal, the metrics server), SIGTERM/SIGINT as a stop flag, and an orderly shutdown.

Every background task is named and guarded: a failure is logged and counted, the loop goes
on; cancellation is re-raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from predictive_scaler.config import (
    Config,
    ConfigError,
    PrometheusConfig,
    Target,
    load_config_file,
    parse_config,
)
from predictive_scaler.config_watch import watch_config_map
from predictive_scaler.delegated_auth import DelegatedAuth
from predictive_scaler.dispatch import Dispatcher, TargetKey, sleep_or_stop
from predictive_scaler.external_metrics import ExternalMetricsServer, watch_certificate
from predictive_scaler.informer import CachedHpaApi, HpaInformer, informer_scopes
from predictive_scaler.kube import KubeClient, load_api_client
from predictive_scaler.leader import LeaderElector
from predictive_scaler.logs import LogFormat, configure_logging, get_logger
from predictive_scaler.prometheus import (
    GroupedRanges,
    PrometheusSettings,
    PrometheusSource,
    RangeResult,
)
from predictive_scaler.publish import (
    ControllerMetrics,
    HealthState,
    SignalFigures,
    TargetFigures,
    bound_port,
    make_app,
    start_http_server,
)
from predictive_scaler.reconcile import (
    CycleReport,
    FitRunner,
    HpaApi,
    TargetReconciler,
    prefetch_batched,
)
from predictive_scaler.restore import OrphanSweep, RestoreQueue
from predictive_scaler.settings import CONFIG_KEY, parse_config_map_ref, prometheus_settings
from predictive_scaler.sharding import Shard, lease_name_for
from predictive_scaler.values import ConfigMapEvent, KubeApiError, ObjectRef

__all__ = [
    "Controller",
    "FitTimeoutError",
    "ProcessFitRunner",
    "RunOptions",
    "ThreadFitRunner",
    "run_controller",
]

DEFAULT_CONCURRENCY: Final = 16
DEFAULT_FIT_TIMEOUT_SECONDS: Final = 300.0
"""Budget of one fit, from submission (a fit of 7 days at 1-minute steps takes seconds; the
budget also covers the wait behind the other fits in flight)."""
CYCLE_IO_ALLOWANCE_SECONDS: Final = 300.0
"""A cycle's deadline is its fit's budget plus this, for its reads and writes (each
Prometheus request is bounded at 2 x its timeout + 1 s, each API call by the client)."""

Clock = Callable[[], datetime]
Sleeper = Callable[[float], Awaitable[None]]
_FitT = TypeVar("_FitT")

log = get_logger()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunOptions:
    """``predictive-scaler run`` options."""

    config_file: str | None = None
    """A YAML file, reloaded when its mtime changes."""
    config_map: str | None = None
    """``NAMESPACE/NAME`` of a ConfigMap with key ``config.yaml``, watched."""
    kubeconfig: str | None = None
    context: str | None = None
    prometheus_url: str | None = None
    """Overrides ``prometheus.url`` of the configuration."""
    dry_run: bool = False
    """Decide and log, never patch; also keeps out of leader election."""
    metrics_port: int | None = None
    """Port of /metrics; ``None``: the configuration's ``controller.metricsPort``."""
    metrics_host: str = "0.0.0.0"
    restore_on_exit: bool = False
    """On SIGTERM/SIGINT, give every managed HPA its base minReplicas back."""
    identity: str | None = None
    """Leader-election identity; default env POD_NAME, else the host name."""
    log_format: LogFormat = "auto"
    config_poll_seconds: float = 5.0
    max_concurrency: int = DEFAULT_CONCURRENCY
    fit_workers: int = 0
    """Processes that fit models; 0 fits in a thread of this process."""
    fit_timeout_seconds: float = DEFAULT_FIT_TIMEOUT_SECONDS
    """Budget of one fit; a fit over it is abandoned (its worker process stopped)."""
    shard_index: int = 0
    """This controller's shard, ``0 <= shard_index < shard_count``."""
    shard_count: int = 1
    """Controllers sharing the targets by a stable hash, each with its own Lease."""
    external_metrics_port: int | None = None
    """Serve the External Metrics API (HTTPS) on this port; ``None``: off."""
    tls_cert_file: str | None = None
    """PEM certificate (chain) of the External Metrics API server."""
    tls_key_file: str | None = None
    """PEM private key of that certificate."""
    requestheader_client_ca_file: str | None = None
    """CA of the front proxy's client certificate (the kube-aggregator's); ``None``: the
    ``requestheader-client-ca-file`` of ``kube-system/extension-apiserver-authentication``."""
    requestheader_allowed_names: tuple[str, ...] = ()
    """Common names that front-proxy certificate may have (with the flag's CA); empty: any."""
    authentication_skip_lookup: bool = False
    """Do not read ``extension-apiserver-authentication``: bearer tokens only, unless
    ``requestheader_client_ca_file`` is given."""


class _SourceSwitch:
    """The current Prometheus source; swapped when the configuration changes how to reach it,
    so reconcilers keep their state across such a reload."""

    def __init__(self, override_url: str | None) -> None:
        self.override_url = override_url
        self.settings: PrometheusSettings | None = None
        self.source: PrometheusSource | None = None

    def configure(self, config: PrometheusConfig | None) -> None:
        settings = prometheus_settings(config, self.override_url)
        if settings is None:
            raise ValueError("no Prometheus URL in the configuration nor on the command line")
        if self.source is not None and repr(settings) == repr(self.settings):
            return
        old, self.source, self.settings = self.source, PrometheusSource(settings), settings
        if old is not None:
            old.close()

    async def fetch_range(
        self, query: str, start: datetime, end: datetime, step_seconds: float
    ) -> RangeResult:
        if self.source is None:
            raise RuntimeError("no Prometheus configured")
        return await self.source.fetch_range(query, start, end, step_seconds)

    async def fetch_range_grouped(
        self,
        query: str,
        by: Sequence[str],
        start: datetime,
        end: datetime,
        step_seconds: float,
    ) -> RangeResult | GroupedRanges:
        if self.source is None:
            raise RuntimeError("no Prometheus configured")
        return await self.source.fetch_range_grouped(query, by, start, end, step_seconds)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None


class FitTimeoutError(TimeoutError):
    """A fit ran past its time budget; it was abandoned (and its worker process stopped)."""


class ProcessFitRunner:
    """Fits models in worker processes (the reconcilers' ``fit_runner`` hook).

    Fitting is CPU-bound Python (statsmodels, the ``auto`` walk forward), so threads share
    one core under the GIL; processes use them all. Workers are spawned (no fork of an event
    loop or of open sockets) and receive ``functools.partial(fit_compact, ...)`` with plain
    arguments; the compact fit they send back is a few kB. At most ``2 * workers`` fits are
    in flight, so a cold start does not queue every target's history at once.

    The pool heals itself. A ``ProcessPoolExecutor`` whose worker died (an OOM kill) refuses
    every later job, so a broken pool is replaced by a new one: the fits that were in it fail
    once (the callers hold on bad data for that cycle), the next ones run. A fit that outlives
    ``timeout_seconds`` (counted from submission, so the budget must cover a wait behind
    ``2 * workers - 1`` others) is abandoned with :class:`FitTimeoutError` and the pool's
    workers are killed and replaced: a worker stuck in a fit would otherwise keep its slot
    for good. :meth:`problem` names a fitter that keeps breaking, for ``/healthz``.
    """

    def __init__(
        self,
        workers: int,
        *,
        timeout_seconds: float | None = None,
        max_consecutive_failures: int = 5,
    ) -> None:
        if workers < 1:
            raise ValueError(f"fit workers must be at least 1, got {workers}")
        self.workers = workers
        self.timeout_seconds = timeout_seconds
        self.max_consecutive_failures = max_consecutive_failures
        self.pools_replaced = 0
        """Pools made anew after a worker died or a fit ran over its budget."""
        self._failures = 0
        self._last_failure = ""
        self._generation = 0
        self._pool = self._new_pool()
        self._slots = asyncio.Semaphore(2 * workers)

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    async def __call__(self, fit: Callable[[], _FitT]) -> _FitT:
        loop = asyncio.get_running_loop()
        async with self._slots:
            generation, pool = self._generation, self._pool
            try:
                future = loop.run_in_executor(pool, fit)
            except BrokenProcessPool:
                # Broken before this job went in (a worker died while idle): it never ran.
                self._replace(generation, "a worker process died")
                generation, pool = self._generation, self._pool
                future = loop.run_in_executor(pool, fit)
            try:
                async with asyncio.timeout(self.timeout_seconds) as budget:
                    result = await future
            except TimeoutError as error:
                if not budget.expired():
                    raise  # the fit's own TimeoutError
                _kill_workers(pool)
                self._replace(generation, f"a fit ran over its {self.timeout_seconds:g}s budget")
                raise FitTimeoutError(
                    f"fit ran over its budget of {self.timeout_seconds:g}s; worker stopped"
                ) from error
            except BrokenProcessPool:
                self._replace(generation, "a worker process died")
                raise
            except Exception:
                self._failures = 0  # the fit itself failed: the pool works
                raise
            self._failures = 0
            return result

    def _replace(self, generation: int, why: str) -> None:
        """Swap in a new pool, once per broken one (its other callers find it replaced)."""
        if generation != self._generation:
            return
        old = self._pool
        self._pool = self._new_pool()
        self._generation += 1
        self._failures += 1
        self._last_failure = why
        self.pools_replaced += 1
        old.shutdown(wait=False, cancel_futures=True)
        log.warning(
            "fit_pool_replaced", why=why, consecutive=self._failures, total=self.pools_replaced
        )

    def problem(self) -> str | None:
        """Why the fitter is unusable: its pool broke ``max_consecutive_failures`` times
        in a row with no fit completing in between; ``None`` while it works."""
        if self._failures >= self.max_consecutive_failures:
            return (
                f"the fit pool broke {self._failures} times in a row without a fit "
                f"completing (last: {self._last_failure})"
            )
        return None

    def close(self) -> None:
        """Stop the workers at once (fits still running are worthless at shutdown; a hung
        one would block a graceful wait forever). Safe to call twice."""
        _kill_workers(self._pool)
        self._pool.shutdown(wait=True, cancel_futures=True)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor has no public way to stop a running job before Python 3.14's
    # terminate_workers(); its ``_processes`` map (pid -> Process) has been stable since 3.2.
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError):
            process.kill()


class ThreadFitRunner:
    """Fits in a thread of this process (``--fit-workers 0``), within a time budget.

    A thread cannot be stopped: a fit over its budget is abandoned (the cycle holds on bad
    data) and runs on in its thread. Use worker processes where fits may hang.
    """

    def __init__(self, timeout_seconds: float | None = None) -> None:
        self.timeout_seconds = timeout_seconds

    async def __call__(self, fit: Callable[[], _FitT]) -> _FitT:
        try:
            async with asyncio.timeout(self.timeout_seconds) as budget:
                return await asyncio.to_thread(fit)
        except TimeoutError as error:
            if not budget.expired():
                raise
            raise FitTimeoutError(
                f"fit ran over its budget of {self.timeout_seconds:g}s; abandoned"
            ) from error


class Controller:
    """The controller's state and one-step operations (no sleeping, no signals)."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        prometheus_url: str | None = None,
        clock: Clock = _utc_now,
        dry_run: bool = False,
        elector: LeaderElector | None = None,
        config_origin: ObjectRef | None = None,
        metrics: ControllerMetrics | None = None,
        health: HealthState | None = None,
        fit_runner: FitRunner | None = None,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        shard: Shard | None = None,
        batch_queries: bool = True,
        hpa_informer: HpaInformer | None = None,
        cycle_deadline_seconds: float = DEFAULT_FIT_TIMEOUT_SECONDS + CYCLE_IO_ALLOWANCE_SECONDS,
    ) -> None:
        self.kube = kube
        self.hpa_informer = hpa_informer
        """The HPA cache the reconcilers read from (``controller.hpaWatch``); ``None``: GETs."""
        self.hpa_api: HpaApi = kube if hpa_informer is None else CachedHpaApi(kube, hpa_informer)
        self.clock = clock
        self.dry_run = dry_run
        self.elector = elector
        self.config_origin = config_origin
        self.metrics = metrics or ControllerMetrics(clock=clock)
        self.health = health or HealthState()
        self.fit_runner: FitRunner = fit_runner or ThreadFitRunner(DEFAULT_FIT_TIMEOUT_SECONDS)
        self.config: Config | None = None
        self.reconcilers: dict[TargetKey, TargetReconciler] = {}
        self.pending_restores = RestoreQueue(
            self.hpa_api, clock=clock, may_patch=self.may_patch, metrics=self.metrics
        )
        """Removed, disabled and orphaned HPAs whose base is still to be given back."""
        self.orphan_sweep = OrphanSweep(
            kube, self.pending_restores, clock=clock, cache=hpa_informer
        )
        self.last_reports: dict[TargetKey, CycleReport] = {}
        self._sources = _SourceSwitch(prometheus_url)
        self.batch_queries = batch_queries
        """Answer targets whose queries share a shape with batched queries."""
        self.dispatcher = Dispatcher(
            self._run_target,
            self._interval_of,
            clock=clock,
            prefetch=self._prefetch if batch_queries else None,
            max_concurrency=max_concurrency,
            deadline_seconds=cycle_deadline_seconds,
            on_deadline=self._deadline_exceeded,
        )
        """The work queue of target cycles (:mod:`predictive_scaler.dispatch`)."""
        self.health.add_check("work_queue", self.dispatcher.problem)
        self._restoring: asyncio.Task[None] | None = None
        self.shard = shard or Shard()
        """The targets this controller owns (all of them with one shard)."""
        self.queries_batched = 0
        """Batched range queries made so far."""
        self._lease_valid_until: datetime | None = None
        self._announced_leading = False
        self.metrics_port: int | None = None
        """The port /metrics listens on, once started."""
        self.external_metrics_port: int | None = None
        """The port of the External Metrics API (HTTPS), once started; ``None`` when off."""
        self.metrics.set_leader(False)

    # ------------------------------------------------------------------ leadership

    def may_patch(self) -> bool:
        """Checked right before every patch: never in dry-run; with an elector, only while
        our lease is held and its last renewal is recent enough to still be ours."""
        if self.dry_run:
            return False
        if self.elector is None:
            return True
        valid = self._lease_valid_until
        return self.elector.is_leader and valid is not None and self.clock() < valid

    async def renew_leadership(self) -> bool:
        """One election step; returns whether we lead now."""
        if self.elector is None:
            return not self.dry_run
        # What we last announced, not may_patch() now: a lease that ran out on our clock
        # between renewals (renewal errors) already reads False here, and its loss must
        # still be logged.
        was = self._announced_leading
        now = self.clock()
        try:
            leading = await self.elector.try_acquire_or_renew(now)
        except KubeApiError as error:
            leading = self.elector.is_leader
            log.warning("lease_renewal_failed", status=error.status, error=str(error))
            if not leading:
                self._lease_valid_until = None
        else:
            if leading:
                e = self.elector
                # Stop patching one renew period before the lease could expire for others.
                margin = e.lease_duration_seconds - e.renew_period_seconds
                self._lease_valid_until = now + timedelta(seconds=margin)
            else:
                self._lease_valid_until = None
        now_leading = self.may_patch()
        if now_leading != was:
            log.info("leadership_acquired" if now_leading else "leadership_lost")
            self._announced_leading = now_leading
        self.metrics.set_leader(now_leading)
        return now_leading

    # ------------------------------------------------------------------ configuration

    async def load_config_text(self, text: str | None) -> bool:
        """Parse and apply a configuration; a bad one keeps the last good one in force."""
        if text is None:
            await self.reject_config(f"{CONFIG_KEY}: missing: the ConfigMap has no such key")
            return False
        try:
            config = parse_config(text)
        except ConfigError as error:
            await self.reject_config(str(error))
            return False
        return await self._apply_or_reject(config)

    async def load_config_file(self, path: str) -> bool:
        try:
            config = load_config_file(path)
        except ConfigError as error:
            await self.reject_config(str(error))
            return False
        return await self._apply_or_reject(config)

    async def _apply_or_reject(self, config: Config) -> bool:
        if prometheus_settings(config.prometheus, self._sources.override_url) is None:
            await self.reject_config(
                "prometheus.url: missing: set prometheus.url in the configuration or pass "
                "--prometheus-url"
            )
            return False
        try:
            self.apply_config(config)
        except Exception as error:  # what validation did not foresee is a rejection too
            log.exception("config_apply_failed", error=str(error))
            await self.reject_config(f"the configuration could not be applied: {error}")
            return False
        return True

    async def reject_config(self, message: str) -> None:
        log.error("config_rejected", error=message, kept_previous=self.config is not None)
        self.metrics.set_config_valid(False)
        self.metrics.count_config_reload("rejected")
        if self.config_origin is None:
            return
        try:
            await self.kube.create_event(
                self.config_origin,
                "ConfigRejected",
                f"invalid configuration, the last good one stays in force:\n{message}",
                now=self.clock(),
                type_="Warning",
            )
        except KubeApiError as error:
            log.warning("event_failed", status=error.status, error=str(error))

    def apply_config(self, config: Config) -> None:
        """Take a validated configuration: keep the state of unchanged targets, rebuild
        changed ones, and queue removed or disabled ones for one restore of their base.

        All-or-nothing: everything that can raise (the new reconcilers, the Prometheus source)
        is built before any state changes, so a failure leaves the previous configuration in
        force whole."""
        owns = self.shard.owns
        wanted = {
            (t.namespace, t.name): t for t in config.enabled_targets() if owns(t.namespace, t.name)
        }
        built = {
            key: self._reconciler(target)
            for key, target in wanted.items()
            if key not in self.reconcilers or self.reconcilers[key].target != target
        }
        self._sources.configure(config.prometheus)  # the last step that may raise
        for key, old in list(self.reconcilers.items()):
            if key not in wanted:
                del self.reconcilers[key]
                self.dispatcher.discard(key)
                self.last_reports.pop(key, None)
                self.metrics.remove_target(old.target.id)
                if owns(*key):  # another shard's target is that shard's to manage
                    self.pending_restores.add(key)
                log.info("target_removed", target=old.target.id)
        # A disabled target found at start may still carry our raise from a previous run.
        for target in config.targets:
            key = (target.namespace, target.name)
            if not owns(*key):
                continue
            if not target.enabled:
                self.pending_restores.add(key)
        for key, target in wanted.items():
            self.pending_restores.discard(key)
            current = self.reconcilers.get(key)
            if key not in built:
                continue
            fresh = built[key]
            if current is not None:
                fresh.history = current.history
                fresh.shadow = current.shadow
                if current.target.id != target.id:
                    self.metrics.remove_target(current.target.id)
            self.reconcilers[key] = fresh
            if key not in self.dispatcher.queue:  # a rebuilt target keeps its due time
                self.dispatcher.schedule(key, self.clock())
        self.config = config
        if self.hpa_informer is not None:
            # Every target's namespace, disabled ones too (their restore reads the HPA).
            scopes = informer_scopes(
                config.controller.hpa_watch, (t.namespace for t in config.targets)
            )
            self.hpa_informer.set_scopes(scopes or ())
        # What a previous run (or a lost queue) left raised is found by its annotations.
        self.orphan_sweep.request(config, owns)
        self.metrics.set_targets(len(wanted))
        self.metrics.set_config_valid(True)
        self.metrics.count_config_reload("applied")
        self.health.config_loaded = True
        log.info("config_reloaded", targets=len(wanted), disabled=len(config.targets) - len(wanted))

    def _reconciler(self, target: Target) -> TargetReconciler:
        return TargetReconciler(
            target,
            self._sources,
            self.hpa_api,
            clock=self.clock,
            may_patch=self.may_patch,
            dry_run=self.dry_run,
            fit_runner=self.fit_runner,
        )

    # ------------------------------------------------------------------ cycles

    async def run_due(self, *, force: bool = False) -> list[CycleReport]:
        """Run every target due now (all with ``force``) through the work queue, wait for
        their cycles, then retry pending restores: the step tests and benchmarks drive (the
        process runs :meth:`serve`). Never raises for a target."""
        reports = await self.dispatcher.run_due(force=force)
        await self.restore_pending()
        return reports

    async def serve(self, stop: asyncio.Event, sleeper: Sleeper) -> None:
        """The process loop until ``stop``: targets run as they come due, each on its own
        (:class:`~predictive_scaler.dispatch.Dispatcher`); ``/healthz`` is ticked on every
        wake; pending restores run beside the cycles."""
        await self.dispatcher.serve(stop, sleeper, self.health.tick, self._restore_beside)
        if self._restoring is not None and not self._restoring.done():
            self._restoring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restoring

    def _restore_beside(self) -> None:
        if self._restoring is None or self._restoring.done():
            self._restoring = asyncio.create_task(self._guarded_restore(), name="restores")

    async def _guarded_restore(self) -> None:
        try:
            await self.restore_pending()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("restore_failed", error=str(error))

    async def _prefetch(self, keys: Sequence[TargetKey], now: datetime) -> None:
        """One batched range query for many due targets whose queries share a shape; each
        keeps its own query when this fails unexpectedly."""
        plans = [
            plan
            for key in keys
            if (rec := self.reconcilers.get(key)) is not None
            for plan in rec.plan_fetches(now)
        ]
        if plans:  # a failure is the dispatcher's to log: each target then queries alone
            self.queries_batched += await prefetch_batched(plans, self._sources)

    def _interval_of(self, key: TargetKey) -> float | None:
        reconciler = self.reconcilers.get(key)
        return None if reconciler is None else reconciler.policy.interval_seconds

    def _deadline_exceeded(self, key: TargetKey) -> None:
        reconciler = self.reconcilers.get(key)
        if reconciler is not None:
            self.metrics.count_cycle_error(reconciler.target.id, "deadline")

    async def _run_target(self, key: TargetKey) -> CycleReport | None:
        reconciler = self.reconcilers.get(key)
        if reconciler is None:
            return None  # removed while queued
        target = reconciler.target
        started = time.perf_counter()
        try:
            report = await reconciler.reconcile()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("cycle_failed", target=target.id, error=str(error))
            self.metrics.count_cycle_error(target.id, "internal")
            return None
        finally:
            self.metrics.cycle_duration.observe(time.perf_counter() - started)
            self.health.first_cycle_done = True
        if self.reconcilers.get(key) is not reconciler:
            return report  # removed or replaced while running: publish nothing stale
        self.last_reports[key] = report
        self._publish(report)
        return report

    def _publish(self, report: CycleReport) -> None:
        m = self.metrics
        if report.error is not None:
            m.count_cycle_error(report.target, "kube")
        for s in report.signals:
            if s.problem is not None:
                m.count_cycle_error(report.target, _problem_kind(s.problem))
        if report.patch_result is not None:
            m.count_patch(report.target, report.patch_result)
            if report.patch_result == "failed":
                m.count_cycle_error(report.target, "patch")
        m.publish_target(
            TargetFigures(
                target=report.target,
                namespace=report.namespace,
                hpa=report.hpa,
                recommended_min_replicas=report.recommended,
                applied_min_replicas=report.applied,
                base_min_replicas=report.base_min_replicas,
                at=report.at,
                owner=report.owner,
                owner_reason=report.reason if report.owner else None,
                signals=tuple(
                    SignalFigures(
                        name=s.name,
                        data_ok=s.data_ok,
                        horizon_seconds=s.horizon_seconds,
                        quantile=s.quantile,
                        mean=s.mean,
                        upper=s.upper_max,
                        abs_error=s.live_abs_error,
                        coverage=s.live_coverage,
                        peak_coverage=s.live_peak_coverage,
                        fresh_until=s.fresh_until,
                    )
                    for s in report.signals
                ),
            )
        )

    async def restore_pending(self) -> None:
        """Sweep for orphans when due, then give back the bases whose time has come
        (:mod:`predictive_scaler.restore`); only while we may patch."""
        if not self.may_patch():
            return
        await self.orphan_sweep.run_due()
        await self.pending_restores.run_due()

    async def restore_all(self) -> None:
        """Restore every managed target's base (``--restore-on-exit``), dry-run ones too (the
        HPA's annotations say whether anything is ours): one attempt each."""
        if not self.may_patch():
            return
        for key in self.reconcilers:
            self.pending_restores.add(key)
        await self.pending_restores.run_due(force=True)

    async def aclose(self) -> None:
        self._sources.close()
        if self.hpa_informer is not None:
            await self.hpa_informer.aclose()


def _problem_kind(problem: str) -> str:
    if problem.startswith("prometheus error"):
        return "prometheus"
    if problem.startswith(("no data", "stale")):
        return "data"
    if problem.startswith(("history too short", "no model", "forecast failed", "fit failed")):
        return "fit"
    if problem.startswith("internal error"):
        return "internal"
    if problem.startswith("no target per pod"):
        return "config"
    return "data"


# ---------------------------------------------------------------------------- the process


def _identity(options: RunOptions) -> str:
    return options.identity or os.environ.get("POD_NAME") or socket.gethostname()


def _lease_namespace(config: Config, config_map: tuple[str, str] | None) -> str:
    return (
        config.controller.lease_namespace
        or os.environ.get("POD_NAMESPACE")
        or (config_map[0] if config_map else None)
        or "default"
    )


class _Supervisor:
    """Named, guarded background tasks."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(self._guard(name, coro), name=name))

    @staticmethod
    async def _guard(name: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("task_failed", task=name, error=str(error))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_controller(
    options: RunOptions,
    *,
    clock: Clock = _utc_now,
    sleeper: Sleeper = asyncio.sleep,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
    on_started: Callable[[Controller], None] | None = None,
) -> int:
    """Run the controller until SIGTERM/SIGINT (or ``stop``); returns the exit code:
    0 after a clean stop, 2 for a configuration the process cannot start with."""
    # The format the operator chose for this run wins over any earlier configuration.
    configure_logging(options.log_format, force=True)
    stop = stop or asyncio.Event()
    if (options.config_file is None) == (options.config_map is None):
        log.error("options_invalid", error="give exactly one of --config and --config-map")
        return 2
    if options.external_metrics_port is not None and not (
        options.tls_cert_file and options.tls_key_file
    ):
        log.error(
            "options_invalid",
            error="--external-metrics-port needs --tls-cert-file and --tls-key-file",
        )
        return 2
    try:
        shard = Shard(options.shard_index, options.shard_count)
    except ValueError as error:
        log.error("options_invalid", error=str(error))
        return 2
    config_map = parse_config_map_ref(options.config_map) if options.config_map else None
    initial: Config | None = None
    if options.config_file is not None:
        try:
            initial = load_config_file(options.config_file)
        except ConfigError as error:
            log.error("config_rejected", error=str(error), source=options.config_file)
            return 2
        if prometheus_settings(initial.prometheus, options.prometheus_url) is None:
            log.error("config_rejected", error="prometheus.url missing and no --prometheus-url")
            return 2

    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    api_client = await load_api_client(options.kubeconfig, options.context)
    kube = KubeClient(api_client, reporting_instance=_identity(options))
    origin = ObjectRef("v1", "ConfigMap", *config_map) if config_map else None
    health = HealthState()
    fit_runner: ProcessFitRunner | ThreadFitRunner
    if options.fit_workers > 0:
        fit_runner = ProcessFitRunner(
            options.fit_workers, timeout_seconds=options.fit_timeout_seconds
        )
        health.add_check("fit_pool", fit_runner.problem)
    else:
        fit_runner = ThreadFitRunner(options.fit_timeout_seconds)
    controller = Controller(
        kube,
        prometheus_url=options.prometheus_url,
        clock=clock,
        dry_run=options.dry_run,
        config_origin=origin,
        health=health,
        max_concurrency=options.max_concurrency,
        fit_runner=fit_runner,
        shard=shard,
        hpa_informer=HpaInformer(kube, sleep=sleeper),
        cycle_deadline_seconds=options.fit_timeout_seconds + CYCLE_IO_ALLOWANCE_SECONDS,
    )
    supervisor = _Supervisor()
    runner = None
    external: ExternalMetricsServer | None = None
    config_ready = asyncio.Event()
    try:
        if initial is not None:
            controller.apply_config(initial)
            config_ready.set()
            assert options.config_file is not None
            supervisor.spawn(
                "config-file",
                _poll_config_file(controller, options, sleeper, stop),
            )
        else:
            assert config_map is not None
            supervisor.spawn(
                "config-watch",
                _watch_config_map(controller, config_map, sleeper, config_ready),
            )
        # The loop needs a configuration before anything else.
        await _wait_first(config_ready, stop)
        if stop.is_set():
            return 0
        assert controller.config is not None
        port = options.metrics_port
        if port is None:
            port = controller.config.controller.metrics_port
        runner = await start_http_server(
            make_app(controller.metrics, health), options.metrics_host, port
        )
        controller.metrics_port = bound_port(runner)
        if options.external_metrics_port is not None:
            assert options.tls_cert_file is not None and options.tls_key_file is not None
            external = ExternalMetricsServer(
                controller.metrics,
                options.tls_cert_file,
                options.tls_key_file,
                auth=DelegatedAuth(
                    kube,
                    client_ca_file=options.requestheader_client_ca_file,
                    allowed_names=options.requestheader_allowed_names,
                    skip_lookup=options.authentication_skip_lookup,
                ),
                host=options.metrics_host,
                port=options.external_metrics_port,
            )
            try:
                controller.external_metrics_port = await external.start()
            except OSError as error:  # unreadable certificate or key, port in use
                log.error("external_metrics_failed", error=str(error))
                return 2
            # Wall-clock file watching, not controller time: the real sleep, not `sleeper`.
            supervisor.spawn("certificate-reload", watch_certificate(external))
        if not options.dry_run:
            settings = controller.config.controller
            controller.elector = LeaderElector(
                kube,
                _lease_namespace(controller.config, config_map),
                lease_name_for(settings.lease_name, shard),
                _identity(options),
                lease_duration_seconds=math.ceil(settings.lease_duration_seconds),
                renew_period_seconds=settings.renew_period_seconds,
                clock=clock,
            )
            await controller.renew_leadership()
            supervisor.spawn("lease", _renew_lease(controller, sleeper, stop))
        log.info(
            "controller_started",
            identity=_identity(options),
            dry_run=options.dry_run,
            metrics_port=controller.metrics_port,
            external_metrics_port=controller.external_metrics_port,
            shard=f"{shard.index}/{shard.count}",
            targets=len(controller.reconcilers),
            fit_workers=options.fit_workers,
        )
        if on_started is not None:
            on_started(controller)
        await controller.serve(stop, sleeper)
        log.info("controller_stopping", restore_on_exit=options.restore_on_exit)
        await supervisor.stop()
        if options.restore_on_exit:
            if controller.elector is not None:
                await controller.renew_leadership()  # patch only while the lease is ours
            await controller.restore_all()
        if controller.elector is not None:
            with contextlib.suppress(KubeApiError):
                await controller.elector.release()
        return 0
    finally:
        await supervisor.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
        if runner is not None:
            await runner.cleanup()
        if external is not None:
            await external.close()
        await controller.aclose()
        await api_client.close()
        if isinstance(fit_runner, ProcessFitRunner):
            await asyncio.to_thread(fit_runner.close)
        log.info("controller_stopped")


async def _wait_first(ready: asyncio.Event, stop: asyncio.Event) -> None:
    waiters = {asyncio.ensure_future(ready.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


async def _renew_lease(controller: Controller, sleeper: Sleeper, stop: asyncio.Event) -> None:
    elector = controller.elector
    assert elector is not None
    while not stop.is_set():
        await sleep_or_stop(sleeper, elector.renew_period_seconds, stop)
        if stop.is_set():
            return
        try:
            await controller.renew_leadership()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # keep electing whatever happens
            log.exception("lease_renewal_failed", error=str(error))


async def _poll_config_file(
    controller: Controller, options: RunOptions, sleeper: Sleeper, stop: asyncio.Event
) -> None:
    path = options.config_file
    assert path is not None
    seen = _mtime(path)
    while not stop.is_set():
        await sleep_or_stop(sleeper, options.config_poll_seconds, stop)
        current = _mtime(path)
        if current != seen:
            seen = current
            await controller.load_config_file(path)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


async def _watch_config_map(
    controller: Controller,
    ref: tuple[str, str],
    sleeper: Sleeper,
    ready: asyncio.Event,
) -> None:
    """Follow the ConfigMap for good (:mod:`predictive_scaler.config_watch`)."""
    namespace, name = ref
    seen: list[str | None] = []  # the data last taken: a re-list feeds it again

    async def on_event(event: ConfigMapEvent) -> None:
        if event.event_type == "DELETED":
            seen.clear()
            await controller.reject_config(f"ConfigMap {namespace}/{name} does not exist")
            return
        text = event.data.get(CONFIG_KEY)
        if seen == [text] and ready.is_set():
            return
        seen[:] = [text]
        if await controller.load_config_text(text):
            ready.set()

    await watch_config_map(
        controller.kube, namespace, name, on_event, metrics=controller.metrics, sleep=sleeper
    )
