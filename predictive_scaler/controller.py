"""The controller's state and its one-step operations: configuration, leadership, cycles.

:class:`Controller` holds the per-target reconcilers and the shared clients and runs one
step at a time (:meth:`Controller.run_due`, :meth:`Controller.renew_leadership`,
:meth:`Controller.load_config_text`), so tests drive it with a fake clock and no sleeping.
:mod:`predictive_scaler.runtime` wires it to the real world.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from predictive_scaler.batching import prefetch_batched
from predictive_scaler.config import Config, ConfigError, Target, load_config_file, parse_config
from predictive_scaler.dispatch import Dispatcher, TargetKey
from predictive_scaler.fit_runner import DEFAULT_FIT_TIMEOUT_SECONDS, ThreadFitRunner
from predictive_scaler.informer import CachedHpaApi, HpaInformer, informer_scopes
from predictive_scaler.kube import KubeClient
from predictive_scaler.leader import LeaderElector
from predictive_scaler.logs import get_logger
from predictive_scaler.pod_overlap import PodClaims
from predictive_scaler.ports import Clock, FitCall, FitRunner, HpaApi, Sleeper
from predictive_scaler.publish import ControllerMetrics, HealthState, SignalFigures, TargetFigures
from predictive_scaler.reconcile import CycleReport, TargetReconciler
from predictive_scaler.restore import OrphanSweep, RestoreQueue
from predictive_scaler.settings import CONFIG_KEY, prometheus_settings
from predictive_scaler.sharding import Shard
from predictive_scaler.source_switch import SourceSwitch
from predictive_scaler.values import KubeApiError, ObjectRef

__all__ = ["CYCLE_IO_ALLOWANCE_SECONDS", "DEFAULT_CONCURRENCY", "Clock", "Controller", "Sleeper"]

DEFAULT_CONCURRENCY: Final = 16
CYCLE_IO_ALLOWANCE_SECONDS: Final = 300.0
"""A cycle's deadline is its fit's budget plus this, for its reads and writes (each
Prometheus request is bounded at 2 x its timeout + 1 s, each API call by the client)."""

log = get_logger()


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        fit_runner: FitCall | None = None,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        shard: Shard | None = None,
        batch_queries: bool = True,
        hpa_informer: HpaInformer | None = None,
        cycle_deadline_seconds: float = DEFAULT_FIT_TIMEOUT_SECONDS + CYCLE_IO_ALLOWANCE_SECONDS,
        progressive_start: bool = False,
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
        self.fit_runner: FitCall = fit_runner or ThreadFitRunner(DEFAULT_FIT_TIMEOUT_SECONDS)
        self.progressive_start = progressive_start
        """A cheap model decides first and fits run beside the cycles
        (:mod:`~predictive_scaler.signal_fitter`); off, a due fit is awaited in the cycle."""
        workers = self.fit_runner.workers if isinstance(self.fit_runner, FitRunner) else 1
        # One worker is left for the cheap first fits of targets still starting.
        self.background_fits = asyncio.Semaphore(max(1, workers - 1))
        # Older history after a staged first fetch: one read at a time, so the cycles'
        # own queries are never queued behind many of them at Prometheus.
        self.background_reads = asyncio.Semaphore(1)
        self.config: Config | None = None
        self.pod_claims = PodClaims()
        """The pods of every target, as far as known, to find targets whose pods overlap."""
        self.reconcilers: dict[TargetKey, TargetReconciler] = {}
        self.pending_restores = RestoreQueue(
            self.hpa_api, clock=clock, may_patch=self.may_patch, metrics=self.metrics
        )
        """Removed, disabled and orphaned HPAs whose base is still to be given back."""
        self.orphan_sweep = OrphanSweep(
            kube, self.pending_restores, clock=clock, cache=hpa_informer
        )
        self.last_reports: dict[TargetKey, CycleReport] = {}
        self._sources = SourceSwitch(prometheus_url)
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
            if now_leading:
                self._decide_held_back_writes(now)
        self.metrics.set_leader(now_leading)
        return now_leading

    def _decide_held_back_writes(self, now: datetime) -> None:
        """Hot standby: a follower runs every cycle (fetch, fit, decide) and writes nothing.
        The targets whose last cycle would have written, and did not only because we did not
        lead, are due again now that we do, so a failover's first patch comes with the Lease
        instead of up to an interval later; the others keep their cadence."""
        for key, report in self.last_reports.items():
            reconciler = self.reconcilers.get(key)
            if reconciler is None or reconciler.dry_run or report.patch_result != "dry_run":
                continue
            self.dispatcher.schedule(key, now)

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
                old.close()
                self.dispatcher.discard(key)
                self.last_reports.pop(key, None)
                self.metrics.remove_target(old.target.id)
                self.pod_claims.release(old.target.id)
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
                current.close()
                fresh.history = current.history
                fresh.shadow = current.shadow
                if current.target.id != target.id:
                    self.metrics.remove_target(current.target.id)
                    self.pod_claims.release(current.target.id)
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
            progressive=self.progressive_start,
            background_fits=self.background_fits,
            background_reads=self.background_reads,
            pod_claims=self.pod_claims,
        )

    async def wait_for_fits(self) -> None:
        """Until every fit running beside the cycles has finished; each is adopted at its
        target's next cycle (tests and benchmarks that want the configured models)."""
        for reconciler in list(self.reconcilers.values()):
            await reconciler.wait_for_fits()

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
                overlaps=tuple((o.other, o.certain) for o in report.overlaps),
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
        for reconciler in self.reconcilers.values():
            reconciler.close()
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
