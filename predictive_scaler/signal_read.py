"""The read-and-forecast half of a target's cycle: find the target's pods, fetch each
signal's new demand, keep its buffer and model (refit or observe), and forecast it.

:class:`SignalReader` holds what a target keeps per signal between cycles (the ring buffer,
the model, the forecasts waiting to come due); :class:`~predictive_scaler.reconcile.
TargetReconciler` builds on it and decides and applies. The result of this half is one
:class:`~predictive_scaler.values.SignalReport` per signal.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from models.series import mask_ranges
from predictive_scaler.batching import FetchPlan
from predictive_scaler.config import HPA_METRIC_ALIASES, Policy, Signal, Target
from predictive_scaler.decision import compute_replicas_for
from predictive_scaler.demand_query import DemandRead, fetch_signal_demand
from predictive_scaler.forecasting import (
    ForecastSettings,
    TargetForecaster,
    WindowForecast,
    steps_for,
)
from predictive_scaler.history_backfill import Backfill, absorb, first_fetch_start, next_window
from predictive_scaler.logs import Logger
from predictive_scaler.objective import objective_scenario
from predictive_scaler.pod_overlap import PodClaims, PodOverlap, PodSelection, equality_selection
from predictive_scaler.policy_settings import forecast_settings
from predictive_scaler.ports import FitCall, MetricSource
from predictive_scaler.promql import (
    batch_shape,
    fresh_samples_template,
    latest_sample_template,
    render_matchers,
    render_query,
    reporting_pods_template,
    selector_matchers,
    selector_requirements,
)
from predictive_scaler.ranges import RangeResult, RangeStatus
from predictive_scaler.signal_buffer import PendingForecast, SignalBuffer
from predictive_scaler.signal_fitter import SignalFitter
from predictive_scaler.signals import demand_template, kind_of
from predictive_scaler.values import HpaSnapshot, KubeApiError, SignalReport

__all__ = [
    "SELECTOR_REFRESH_SECONDS",
    "ScaleSelectorReader",
    "SignalReader",
    "SignalState",
]

FloatArray = npt.NDArray[np.float64]
_T = TypeVar("_T")
ScaleSelectorReader = Callable[[str, Mapping[str, str]], Awaitable[str | None]]
"""``(namespace, scale target ref) -> status.selector`` of the HPA's scale target."""

SELECTOR_REFRESH_SECONDS: Final = 600.0
"""How often the scale target's pod selector is read again while the target is unchanged."""


async def _fit_in_thread(fit: Callable[[], _T]) -> _T:
    # Fitting is CPU work (statsmodels); the event loop must keep serving the other targets.
    return await asyncio.to_thread(fit)


class SignalState(SignalBuffer):
    """One signal of a target: its demand buffer, its model and why the last fit failed."""

    def __init__(
        self,
        signal: Signal,
        forecaster: TargetForecaster,
        capacity: int,
        step: float,
        *,
        key: str = "",
        fitter: SignalFitter,
    ) -> None:
        super().__init__(capacity, step)
        self.signal = signal
        self.forecaster = forecaster
        self.key = key
        """Stable id of the target's signal (refit staggering)."""
        self.fitter = fitter
        """When and where its model is fitted (:mod:`~predictive_scaler.signal_fitter`)."""
        self.backfill: Backfill | None = None
        """The older history still to read after a staged first fetch (progressive)."""
        self.others_seen = False
        """The kind's other queries (queue, running) have answered: a gap in them is then
        missing data, not a target without them (:func:`~predictive_scaler.demand_query.
        fetch_signal_demand`)."""

    @property
    def fit_problem(self) -> str | None:
        """Why the last fit failed; None after a fit lands."""
        return self.fitter.problem


def _fetch_window(state: SignalBuffer, now: datetime) -> tuple[float, float]:
    """Epoch seconds of the first and last point the next fetch asks for (``start > end``:
    nothing new)."""
    return state.fetch_window(now.timestamp())


def _fresh_until(state: SignalBuffer, stale_after_seconds: float) -> datetime | None:
    newest = state.newest_finite()
    if newest is None:
        return None
    return datetime.fromtimestamp(newest + stale_after_seconds, UTC)


class SignalReader:
    """Reads and forecasts every signal of one target, cycle after cycle."""

    def __init__(
        self,
        target: Target,
        source: MetricSource,
        *,
        logger: Logger,
        scale_selector: ScaleSelectorReader | None = None,
        fit_runner: FitCall = _fit_in_thread,
        progressive: bool = False,
        background_fits: asyncio.Semaphore | None = None,
        background_reads: asyncio.Semaphore | None = None,
        pod_claims: PodClaims | None = None,
    ) -> None:
        self.target = target
        self.source = source
        self.scale_selector = scale_selector
        """Reads the scale target's pod selector (``None``: the pods are the namespace's, or
        the configured selector's)."""
        self.fit_runner = fit_runner
        self.progressive = progressive
        """A cheap model first and fits beside the cycles (:mod:`~.signal_fitter`)."""
        self.background_fits = background_fits or asyncio.Semaphore(1)
        """Fits beside the cycles at once, shared by the controller's targets."""
        self.background_reads = background_reads or asyncio.Semaphore(1)
        """Reads of older history beside the cycles at once (:mod:`~.history_backfill`)."""
        self.log = logger
        self.settings: ForecastSettings = forecast_settings(target.policy)
        self._signals = self._fresh_signals()
        self.match_labels: dict[str, str] = dict(target.match_labels)
        """Equality matchers of the target's pods: the namespace, then the configured
        selector, or else the labels of its HPA's scale target (once read)."""
        self._set_matchers: tuple[str, ...] = ()
        """Set-based requirements of the scale target's selector (``in``, ``notin``...)."""
        self.matchers = render_matchers(self.match_labels)
        """What ``${matchers}`` stands for in this target's queries."""
        self.pods_selector: str | None = None
        """The scale subresource's ``status.selector`` the matchers come from, once read."""
        self._selector_read: tuple[tuple[tuple[str, str], ...], float] | None = None
        self._prefetched: dict[tuple[object, ...], RangeResult] = {}
        """Batched answers for this cycle's range queries (each used once)."""
        self.pod_claims = pod_claims or PodClaims()
        """The pods of the controller's targets, shared by them, to find overlaps."""
        if target.selector:
            self._claim_configured()
        else:
            # Until its scale target is read, the pods a rebuilt target had still stand.
            self.pod_claims.release_configured(target.id)

    def _claim_configured(self) -> None:
        selection = equality_selection(self.target.namespace, self.target.selector)
        self.pod_claims.claim(self.target.id, selection, configured=True)

    def pod_overlaps(self) -> tuple[PodOverlap, ...]:
        """The other targets whose pods overlap this one's, as far as their pods are known."""
        return self.pod_claims.overlaps(self.target.id)

    @property
    def policy(self) -> Policy:
        return self.target.policy

    async def read_signals(self, snapshot: HpaSnapshot, now: datetime) -> list[SignalReport]:
        """This cycle's report of every signal, against the HPA as read now."""
        await self.resolve_pods(snapshot, now)
        objective = self.policy.objective
        for state in self._signals.values():
            per_pod = self._per_pod(snapshot, state.signal)
            if objective is not None and per_pod is not None:
                # The chooser replays this signal's history on the HPA as it is now.
                base = snapshot.base_min_replicas or snapshot.min_replicas
                scenario = objective_scenario(self.policy, per_pod, base, snapshot.max_replicas)
                state.fitter.set_objective(objective, scenario)
        return [
            self._with_target(await self._contained_signal(state, now), snapshot, state.signal)
            for state in self._signals.values()
        ]

    def idle_reports(self) -> tuple[SignalReport, ...]:
        """Every signal's report of a cycle that could not read the HPA."""
        return tuple(self._idle_report(s) for s in self._signals.values())

    def plan_fetches(self, now: datetime) -> list[FetchPlan]:
        """The range queries this cycle will make (when ``now`` is the cycle's time) that a
        batched query can answer: templates of the preset shape only. Each signal's are
        the queries its kind declares, and the freshness, newest-sample and pod-count forms
        of the first."""
        plans: list[FetchPlan] = []
        for state in self._signals.values():
            start, end = self._window(state, now)
            first_query, *others = kind_of(state.signal).queries(state.signal)
            demand = first_query.template
            windows: list[tuple[str | None, float]] = [(reporting_pods_template(demand), end)]
            if start <= end:
                windows += [
                    (demand, start),
                    (fresh_samples_template(demand, state.step), start),
                    (latest_sample_template(demand), end),
                    *((other.template, start) for other in others),
                ]
            for template, first in windows:
                shape = batch_shape(template) if template is not None else None
                if template is None or shape is None:
                    continue
                kind, metrics = shape
                if self._set_matchers:
                    continue  # a set-based pod selector has no batched form
                labels = self.match_labels
                plans.append(
                    FetchPlan(self, template, metrics, labels, first, end, state.step, kind=kind)
                )
        return plans

    def accept_prefetched(self, plan: FetchPlan, result: RangeResult) -> None:
        """Hold a batched answer for this cycle's fetch of ``plan`` (used once)."""
        key = (plan.template, plan.start, plan.end, plan.step, tuple(plan.labels.items()))
        self._prefetched[key] = result

    def _fresh_signals(self) -> dict[str, SignalState]:
        p, t = self.target.policy, self.target
        capacity = steps_for(p.history_seconds, p.step_seconds)
        states = {}
        for s in t.signals:
            forecaster = TargetForecaster(self.settings)
            key = f"{t.namespace}/{t.name}/{s.name}"
            fitter = SignalFitter(
                forecaster,
                self.fit_runner,
                key=key,
                log=self.log,
                signal=s.name,
                progressive=self.progressive,
                background=self.background_fits,
            )
            states[s.name] = SignalState(
                s, forecaster, capacity, p.step_seconds, key=key, fitter=fitter
            )
        return states

    def close(self) -> None:
        """Stop the fits and reads running beside the cycles (the target is gone or
        replaced)."""
        for state in self._signals.values():
            state.fitter.cancel()
            if state.backfill is not None:
                state.backfill.cancel()

    async def wait_for_fits(self) -> None:
        """Until the fits running beside the cycles have finished (tests, benchmarks); each
        is adopted at its signal's next cycle."""
        for state in list(self._signals.values()):
            if state.backfill is not None:
                await state.backfill.wait()
            await state.fitter.wait()

    async def resolve_pods(self, snapshot: HpaSnapshot, now: datetime) -> None:
        """Find the target's pods as the HPA controller does: from its scale target's
        ``status.selector``, rendered into ``${matchers}``. A configured ``selector`` wins.
        Read again when the scale target changes, else every :data:`SELECTOR_REFRESH_SECONDS`;
        when the pods change, the buffered history (of other pods) is dropped."""
        if self.target.selector:
            # Again each cycle: a reload rejected after this target's successor claimed its
            # pods leaves this (still running) target's claim to restore.
            self._claim_configured()
            return
        reader = self.scale_selector
        if reader is None:
            return
        ref = tuple(sorted(snapshot.scale_target_ref.items()))
        last = self._selector_read
        if (
            last is not None
            and last[0] == ref
            and now.timestamp() - last[1] < (SELECTOR_REFRESH_SECONDS)
        ):
            return
        self._selector_read = (ref, now.timestamp())  # a failure is retried after as long
        try:
            selector = await reader(self.target.namespace, snapshot.scale_target_ref)
        except KubeApiError as error:
            # Keep the pods we had (or the namespace): a failed read is no reason to stop.
            self.log.warning("scale_selector_failed", status=error.status, error=str(error))
            return
        if selector == self.pods_selector:
            return
        try:
            equal, other = selector_matchers(selector or "")
            requirements = selector_requirements(selector or "")
        except ValueError as error:
            self.log.warning("scale_selector_unusable", selector=selector, error=str(error))
            return
        labels = {"namespace": self.target.namespace, **equal}
        matchers = ",".join(x for x in (render_matchers(labels), *other) if x)
        if self.pods_selector is not None or any(s.size for s in self._signals.values()):
            self.close()
            self._signals = self._fresh_signals()  # history of other pods
        self.log.info("pods_selected", selector=selector, matchers=matchers)
        self.pods_selector, self.match_labels = selector, labels
        self._set_matchers, self.matchers = other, matchers
        known = None if selector is None else PodSelection(self.target.namespace, requirements)
        self.pod_claims.claim(self.target.id, known)  # no selector: not compared

    async def _contained_signal(self, state: SignalState, now: datetime) -> SignalReport:
        """The signal's report; an unexpected exception becomes its data problem, so the
        cycle still decides (hold, then decay) instead of ending without a decision."""
        try:
            return await self._forecast_signal(state, now)
        except Exception as error:  # CancelledError is not an Exception: it propagates
            self.log.exception("signal_failed", signal=state.signal.name, error=str(error))
            return SignalReport(
                state.signal.name,
                f"internal error: {type(error).__name__}: {error}",
                self.settings.horizon_steps * self.settings.step_seconds,
                self.settings.quantile,
                points=state.size,
            )

    def _idle_report(self, state: SignalState) -> SignalReport:
        return SignalReport(
            state.signal.name,
            "not evaluated: the HPA could not be read",
            self.settings.horizon_steps * self.settings.step_seconds,
            self.settings.quantile,
        )

    @staticmethod
    def _per_pod(snapshot: HpaSnapshot, signal: Signal) -> float | None:
        """The signal's target per pod: configured, else the HPA's for its metric."""
        per_pod = signal.target_per_pod
        if per_pod is None and signal.hpa_metric is not None:
            for name in HPA_METRIC_ALIASES.get(signal.hpa_metric, (signal.hpa_metric,)):
                per_pod = snapshot.target_average_value_for(name)
                if per_pod is not None:
                    break
        return per_pod if per_pod is not None and per_pod > 0 else None

    def _with_target(
        self, report: SignalReport, snapshot: HpaSnapshot, signal: Signal
    ) -> SignalReport:
        per_pod = self._per_pod(snapshot, signal)
        if per_pod is None:
            problem = (
                f"no target per pod: the HPA has no AverageValue target for "
                f"{signal.hpa_metric!r} and targetPerPod is not set"
            )
            return replace(report, problem=report.problem or problem)
        needed = (
            compute_replicas_for(report.upper_max, per_pod)
            if report.upper_max is not None and report.problem is None
            else None
        )
        partial = report.partial
        running = snapshot.current_replicas
        if report.reporting_pods is not None and report.reporting_pods < running:
            # A pod that does not report is not a pod without load (the HPA's own caution):
            # the sum is a lower bound, so it may raise, never lower.
            partial = partial or f"{report.reporting_pods} of {running} pods reporting"
        return replace(report, target_per_pod=per_pod, needed=needed, partial=partial)

    async def _forecast_signal(self, state: SignalState, now: datetime) -> SignalReport:
        p = self.policy
        horizon = self.settings.horizon_steps * self.settings.step_seconds
        # The quantile decided on: the policy's, or the one its objective last chose.
        # Only a query of the presets' shape has a form asking its samples' own timestamps.
        on_grid = latest_sample_template(demand_template(state.signal)) is None
        base = SignalReport(
            state.signal.name,
            None,
            horizon,
            state.forecaster.settings.quantile,
            freshness="grid" if on_grid else "samples",
        )
        self._step_backfill(state, now)
        problem, new_start, new, partial = await self._fetch(state, now)
        if new is None and problem is None and partial is not None:
            # The new points were kept out (a freshness, queue or running query failed): the
            # cycle has no data its model has not seen, and the forecast the model made
            # before them is not the complete data's (on a falling demand it is higher, and
            # its window is longer). Missing data: hold, then decay; never raise on it.
            problem, partial = partial, None
        reporting, count_problem = await self._reporting_pods(state, now)
        base = replace(base, partial=partial or count_problem, reporting_pods=reporting)
        if new is not None and new_start is not None:
            new = self._mask(new_start, new)
            state.append(new_start, new)
            self._settle(state)
        newest = state.newest_finite()
        if newest is not None and state.newest_sample is not None:
            newest = min(newest, state.newest_sample)  # the sample's own time, not the grid's
        now_s = now.timestamp()
        if problem is None:
            if newest is None:
                problem = "no data: no sample in the history"
            elif now_s - newest > p.stale_after_seconds:
                problem = f"stale: newest sample is {now_s - newest:.0f}s old"
            elif state.observed_seconds() < p.min_history_seconds:
                # Too little history to forecast from: data, not a forecast, is missing.
                problem = (
                    f"history too short: {state.observed_seconds() / 3600:.1f}h observed, "
                    f"minHistory is {p.min_history_seconds / 3600:.1f}h"
                )
        if state.size and new is not None:
            fit_problem = await self._refit_or_observe(state, new)
            problem = problem or fit_problem
        if state.forecaster.model is None:
            problem = problem or state.fit_problem or "no model fitted yet"
            return replace(base, problem=problem, points=state.size)
        last = state.last
        # The window runs from the newest point the model has seen to now + warm-up +
        # interval, so the age of that point lengthens it.
        age = now_s - last if last is not None else 0.0
        try:
            window = state.forecaster.forecast(age_seconds=age)
        except (ValueError, RuntimeError) as error:
            problem = f"forecast failed: {error}"
            return replace(base, problem=problem, points=state.size)
        if problem is None and last is not None:
            state.pending.append(
                PendingForecast(
                    last + window.horizon_seconds,
                    window.mean_at_horizon,
                    window.upper_at_horizon,
                    last + state.step,
                    window.upper_max,
                )
            )
        return self._report(base, state, window, problem)

    def _report(
        self,
        base: SignalReport,
        state: SignalState,
        window: WindowForecast,
        problem: str | None,
    ) -> SignalReport:
        backtest = state.forecaster.backtest_
        choice = state.fitter.choice
        return replace(
            base,
            problem=problem,
            objective=choice.report() if choice is not None else None,
            mean=window.mean_at_horizon,
            upper_at_horizon=window.upper_at_horizon,
            upper_max=window.upper_max,
            floor=window.floor,
            model=window.model,
            live_abs_error=float(np.mean(state.errors)) if state.errors else None,
            live_coverage=float(np.mean(state.covered)) if state.covered else None,
            live_peak_coverage=(float(np.mean(state.peak_covered)) if state.peak_covered else None),
            backtest_abs_error=backtest.abs_error,
            backtest_coverage=backtest.coverage,
            backtest_count=backtest.count,
            backtest_peak_coverage=backtest.peak_coverage,
            points=state.size,
            fresh_until=_fresh_until(state, self.policy.stale_after_seconds),
        )

    async def _fetch(
        self, state: SignalState, now: datetime
    ) -> tuple[str | None, float | None, FloatArray | None, str | None]:
        """New demand points since the last fetch: (problem, first point's time, values,
        why they are partial).

        The first fetch reads the whole history; later ones only from the newest point on.
        On a failed or empty answer nothing advances, so the next cycle asks again. A failed
        queue or running query (one failed batch chunk fails it for all its targets) keeps
        the new points out as well: they would be uncorrected, and the buffer is the model's
        history, so they are fetched again, complete, once the query answers.
        """
        step = state.step
        whole, _ = _fetch_window(state, now)
        start, end = self._window(state, now)
        last = state.last
        if last is not None and last + step < start:
            state.reset()  # gap longer than the history
            if state.backfill is not None:
                state.backfill.cancel()
                state.backfill = None
        if start > end:
            return None, None, None, None
        read = await fetch_signal_demand(
            state.signal, self._range, start, end, step, self.log, others_seen=state.others_seen
        )
        state.others_seen = state.others_seen or read.others_seen
        if read.newest_sample is not None:
            state.newest_sample = max(read.newest_sample, state.newest_sample or read.newest_sample)
        if read.values is None:
            return read.problem, None, None, read.partial
        if state.last is None and start > whole:
            state.backfill = Backfill(start)  # the rest is read beside the cycles
        return read.problem, start, read.values, read.partial

    def _window(self, state: SignalState, now: datetime) -> tuple[float, float]:
        """The next fetch's first and last point: with a progressive start, a first fetch
        reads only the newest part of the history (:func:`first_fetch_start`)."""
        start, end = _fetch_window(state, now)
        if self.progressive and state.last is None:
            start = first_fetch_start(start, end, state.step, self.policy.min_history_seconds)
        return start, end

    def _step_backfill(self, state: SignalState, now: datetime) -> None:
        """Put the older history read beside the cycles in front of the buffer once it has
        come, or start reading it; a failed read is made again at the next cycle."""
        backfill = state.backfill
        if backfill is None or state.start is None:
            return
        outcome = backfill.take()
        if outcome is not None:
            if absorb(state, backfill.start, outcome, self._mask, self.log, state.signal.name):
                state.backfill = None
                state.fitter.history_extended()
            return
        if backfill.task is not None:
            return  # still reading
        window = next_window(state, now.timestamp())
        if window is None:
            state.backfill = None
            state.fitter.history_extended()
            return
        backfill.start, end = window

        async def read() -> DemandRead:
            async with self.background_reads:
                return await fetch_signal_demand(
                    state.signal,
                    self._range,
                    window[0],
                    end,
                    state.step,
                    self.log,
                    others_seen=state.others_seen,
                )

        name = f"history {self.target.id}/{state.signal.name}"
        backfill.task = asyncio.get_running_loop().create_task(read(), name=name)

    async def _reporting_pods(
        self, state: SignalState, now: datetime
    ) -> tuple[int | None, str | None]:
        """Pods the newest step of the demand sums over, and why they could not be counted."""
        template = reporting_pods_template(demand_template(state.signal))
        if template is None:
            return None, None
        _, end = _fetch_window(state, now)
        answer = await self._range(template, end, end, state.step)
        if answer.status is RangeStatus.ERROR:
            return None, f"pod count query failed: {answer.message}"
        if answer.status is RangeStatus.EMPTY or not answer.values.size:
            return 0, None
        value = float(answer.values[-1])
        return (round(value) if math.isfinite(value) else 0), None

    async def _range(self, template: str, start: float, end: float, step: float) -> RangeResult:
        # Only an answer for the pods as they are now (the scale target may have just been read).
        labels = tuple(self.match_labels.items())
        prefetched = self._prefetched.pop((template, start, end, step, labels), None)
        if prefetched is not None:
            return prefetched
        query = render_query(template, {}, raw={"matchers": self.matchers})
        return await self.source.fetch_range(
            query,
            datetime.fromtimestamp(start, UTC),
            datetime.fromtimestamp(end, UTC),
            step,
        )

    def _mask(self, start: float, values: FloatArray) -> FloatArray:
        if not self.policy.exclude:
            return values
        ranges = [(e.start.timestamp(), e.end.timestamp()) for e in self.policy.exclude]
        return mask_ranges(start, self.settings.step_seconds, values, ranges)

    def _settle(self, state: SignalState) -> None:
        state.settle()

    async def _refit_or_observe(self, state: SignalState, new: FloatArray) -> str | None:
        """Refit when due (off the event loop; beside the cycles when progressive), else
        absorb the new points; the problem if the model could not be fitted."""
        return await state.fitter.step(
            lambda: state.window(self.settings.history_points),
            new,
            complete=state.backfill is None,
        )
