"""One cycle for one target: fetch -> demand -> forecast -> decide -> apply -> report.

All I/O goes through narrow seams passed in (:class:`MetricSource`, :class:`HpaApi`, a clock,
a leadership check and a fit runner), so tests drive the real Prometheus adapter against the
real server and the real Kubernetes adapter against the API double, with a fake clock.

State kept in memory per target (demand buffers, forecasters, the decision history, past
forecasts waiting to come due) is only an optimisation: everything needed after a restart
is in the HPA's annotations, and a fresh reconciler re-reads the whole history once.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from models import FitResult, InsufficientHistory, InvalidSeries
from models.series import mask_ranges
from predictive_scaler.annotations import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_REASON,
    ANNOTATION_STATE,
    ANNOTATION_UPDATED_AT,
    MANAGED_ANNOTATIONS,
    ClockState,
    StateError,
    compute_clock_state,
    decide_clock_write,
    decide_info_refresh,
    decode_clock_state,
    encode_clock_state,
    restore_history,
    state_changed,
)
from predictive_scaler.config import HPA_METRIC_ALIASES, Policy, Signal, Target
from predictive_scaler.decision import (
    Decision,
    DecisionHistory,
    DecisionPolicy,
    HpaLimits,
    SignalForecast,
    compute_replicas_for,
    decide_min_replicas,
)
from predictive_scaler.demand_query import fetch_signal_demand
from predictive_scaler.forecasting import (
    ForecastSettings,
    TargetForecaster,
    WindowForecast,
    refit_offset,
    steps_for,
)
from predictive_scaler.logs import Logger, get_logger
from predictive_scaler.ownership import ForeignOwner, find_foreign_owner
from predictive_scaler.ports import HpaApi
from predictive_scaler.prometheus import (
    GroupedRanges,
    RangeResult,
    RangeStatus,
    batch_shape,
    escape_promql_string,
    fresh_samples_template,
    latest_sample_template,
    render_batch_query,
    render_matchers,
    render_query,
    reporting_pods_template,
)
from predictive_scaler.values import ConflictError, HpaSnapshot, KubeApiError

__all__ = [
    "DEFAULT_BATCH_SAMPLES",
    "DEFAULT_BATCH_SIZE",
    "MANAGED_ANNOTATIONS",
    "MAX_CONFLICT_RETRIES",
    "REASON_BASE_RESTORED",
    "CycleReport",
    "DryRunShadow",
    "FetchPlan",
    "GroupedMetricSource",
    "HpaApi",
    "MetricSource",
    "SignalReport",
    "TargetReconciler",
    "determine_base",
    "prefetch_batched",
]

FloatArray = npt.NDArray[np.float64]
Clock = Callable[[], datetime]
FitRunner = Callable[[Callable[[], FitResult]], Awaitable[FitResult]]

MAX_CONFLICT_RETRIES: Final = 3
"""Attempts of read-decide-patch when the HPA changes under us (409)."""
LIVE_ERROR_WINDOW: Final = 288
"""Forecasts that came due kept for the rolling live error and coverage."""
REASON_BASE_RESTORED: Final = "BaseRestored"
SELECTOR_REFRESH_SECONDS: Final = 600.0
"""How often the scale target's pod selector is read again while the target is unchanged."""


class MetricSource(Protocol):
    """What a cycle needs of Prometheus (met by :class:`~predictive_scaler.prometheus.
    PrometheusSource`)."""

    async def fetch_range(
        self, query: str, start: datetime, end: datetime, step_seconds: float
    ) -> RangeResult: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def _fit_in_thread(fit: Callable[[], FitResult]) -> FitResult:
    # Fitting is CPU work (statsmodels); the event loop must keep serving the other targets.
    return await asyncio.to_thread(fit)


# ---------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class SignalReport:
    """One signal after a cycle: its forecast, or why there is none."""

    name: str
    problem: str | None
    horizon_seconds: float
    quantile: float
    partial: str | None = None
    """Why the forecast stands on partial data (it may raise, never lower)."""
    reporting_pods: int | None = None
    """Pods whose series the newest step sums over (None when the query's shape does not
    allow counting them)."""
    mean: float | None = None
    """Mean forecast at the horizon."""
    upper_at_horizon: float | None = None
    upper_max: float | None = None
    floor: float | None = None
    """The history floor the decision takes when above ``upper_max`` (None: off)."""
    """Calibrated upper bound of the window's peak: what the decision uses."""
    target_per_pod: float | None = None
    needed: int | None = None
    model: str | None = None
    live_abs_error: float | None = None
    """Rolling mean absolute error of this process's forecasts that came due."""
    live_coverage: float | None = None
    live_peak_coverage: float | None = None
    """Rolling share of due windows whose realised peak was at or below the bound."""
    backtest_abs_error: float | None = None
    """Mean absolute error at the horizon of the model's out-of-sample walk forward over the
    held-out recent history (measured at the last refit)."""
    backtest_coverage: float | None = None
    backtest_count: int = 0
    backtest_peak_coverage: float | None = None
    """Share of the walk forward's window peaks at or below the window-peak bound."""
    points: int = 0
    """Demand points in the buffer."""
    fresh_until: datetime | None = None
    """When the forecast's data goes stale (newest sample + staleAfter): past this it must not
    be published, since nothing new has entered it."""

    @property
    def data_ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class CycleReport:
    """What one cycle found, decided and did."""

    target: str
    namespace: str
    hpa: str
    at: datetime
    signals: tuple[SignalReport, ...]
    min_replicas_before: int | None = None
    max_replicas: int | None = None
    current_replicas: int | None = None
    base_min_replicas: int | None = None
    recommended: int | None = None
    """The decision's minReplicas (applied or not)."""
    applied: int | None = None
    """spec.minReplicas after the cycle."""
    reason: str | None = None
    message: str | None = None
    patch_result: str | None = None
    """``applied``, ``conflict``, ``failed``, ``dry_run``; ``None`` when nothing to change."""
    error: str | None = None
    """Why the cycle could not decide (the HPA could not be read)."""
    error_status: int | None = None
    """HTTP status of that failure; 0 when the API server did not answer."""
    owner: str | None = None
    """``Kind/name`` of the controller that owns the HPA (KEDA's ScaledObject...): the cycle
    forecast and published but did not patch (``reason`` says ``OwnedByKEDA``...)."""


# ---------------------------------------------------------------------------- base


def determine_base(snapshot: HpaSnapshot) -> tuple[int, bool]:
    """The user's own minReplicas, and whether a hand edit was just detected.

    First contact (no annotation): spec.minReplicas is the user's. When our
    ``applied-min-replicas`` annotation exists and spec.minReplicas differs from it, someone
    edited it by hand after our last patch: that value is obeyed as the new base.
    """
    base = snapshot.base_min_replicas
    if base is None:
        return snapshot.min_replicas, False
    applied_raw = snapshot.annotations.get(ANNOTATION_APPLIED_MIN_REPLICAS)
    try:
        applied = int(applied_raw) if applied_raw is not None else None
    except ValueError:
        applied = None
    if applied is not None and applied != snapshot.min_replicas:
        return snapshot.min_replicas, True
    return base, False


@dataclass(frozen=True)
class DryRunShadow:
    """Dry run's stand-in for the HPA it never patches: what the live controller would have
    written, so the next decision starts from there (as live would) and not from the untouched
    base, which would cap every raise at base + scaleUpStep and skip every lowering."""

    min_replicas: int
    annotations: Mapping[str, str]
    spec_min_replicas: int
    """The HPA's real spec.minReplicas when the shadow was taken: a change there is a user's
    hand edit, obeyed as live obeys it."""

    def view(self, real: HpaSnapshot) -> HpaSnapshot:
        """``real`` as the live controller would read it now. The replica counts stay real:
        they are the pods that really report."""
        edited = real.min_replicas != self.spec_min_replicas
        return replace(
            real,
            min_replicas=real.min_replicas if edited else self.min_replicas,
            annotations=self.annotations,
        )


def _merged(current: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    """Annotations after a JSON merge patch (``None`` removes a key)."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------------------- per signal


@dataclass
class _Pending:
    due: float
    mean: float
    upper: float
    start: float = math.nan
    """First step of the window (the one after the newest point seen)."""
    peak: float = math.nan
    """The window-peak bound the decision took."""


@dataclass
class _SignalState:
    """One signal's demand buffer and model.

    The buffer is a ring of ``capacity`` points allocated once: a steady cycle writes its
    new point in place, so nothing the size of the history is allocated per cycle; the
    ordered history is copied out only to fit (:meth:`window`).
    """

    signal: Signal
    forecaster: TargetForecaster
    capacity: int
    step: float
    key: str = ""
    """Stable id of the target's signal (refit staggering)."""
    start: float | None = None
    """Epoch seconds of the oldest buffered point."""
    _ring: FloatArray = field(default_factory=lambda: np.empty(0), repr=False)
    _head: int = 0
    """Ring index of the oldest point."""
    size: int = 0
    """Points in the buffer."""
    pending: deque[_Pending] = field(default_factory=deque)
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=LIVE_ERROR_WINDOW))
    covered: deque[bool] = field(default_factory=lambda: deque(maxlen=LIVE_ERROR_WINDOW))
    peak_covered: deque[bool] = field(default_factory=lambda: deque(maxlen=LIVE_ERROR_WINDOW))
    fit_problem: str | None = None
    newest_sample: float | None = None
    """Epoch seconds of the newest sample seen, by its own timestamp (None when the query's
    shape does not allow asking; freshness is then judged on the grid)."""
    _oldest_finite: float | None = None

    @property
    def values(self) -> FloatArray:
        """All buffered points, oldest first (a copy)."""
        return self.window(self.size)

    def window(self, points: int) -> FloatArray:
        """The newest ``points`` points (at most all), oldest first, as a new array."""
        n = min(max(points, 0), self.size)
        first = (self._head + self.size - n) % max(self.capacity, 1)
        if first + n <= self._ring.size:
            return self._ring[first : first + n].copy()
        return np.concatenate([self._ring[first:], self._ring[: first + n - self._ring.size]])

    @property
    def last(self) -> float | None:
        """Epoch seconds of the newest point."""
        if self.start is None or not self.size:
            return None
        return self.start + (self.size - 1) * self.step

    def reset(self) -> None:
        """Forget the buffered points (keeps the allocation)."""
        self.start, self._head, self.size = None, 0, 0
        self._oldest_finite = None
        self.newest_sample = None

    def append(self, start: float, new: FloatArray) -> None:
        """Append points that follow the buffer (the first at ``start`` when it is empty);
        keep the newest ``capacity``."""
        arr = np.asarray(new, dtype=np.float64)
        cap, step = self.capacity, self.step
        if self._ring.size != cap:
            self._ring = np.empty(cap)
        if self.start is None or not self.size:
            self.start, self._head, self.size = start, 0, 0
        if arr.size >= cap:
            self.start += (self.size + arr.size - cap) * step
            self._ring[:] = arr[arr.size - cap :]
            self._head, self.size = 0, cap
            return
        at = (self._head + self.size) % cap
        first = min(arr.size, cap - at)
        self._ring[at : at + first] = arr[:first]
        self._ring[: arr.size - first] = arr[first:]
        self.size += arr.size
        overflow = self.size - cap
        if overflow > 0:
            self._head = (self._head + overflow) % cap
            self.size = cap
            self.start += overflow * step

    def _at(self, index: int) -> float:
        return float(self._ring[(self._head + index) % self.capacity])

    def value_at(self, when: float) -> float:
        if self.start is None:
            return math.nan
        index = round((when - self.start) / self.step)
        if 0 <= index < self.size:
            return self._at(index)
        return math.nan

    def settle(self) -> None:
        """Score past forecasts whose time has come against what happened."""
        last = self.last
        while self.pending and last is not None and self.pending[0].due <= last:
            item = self.pending.popleft()
            actual = self.value_at(item.due)
            if math.isfinite(actual):
                self.errors.append(abs(actual - item.mean))
                self.covered.append(actual <= item.upper + 1e-12)
            # The window's realised peak against the bound the decision took on it; only a
            # window with every step observed is scored.
            if math.isfinite(item.peak) and math.isfinite(item.start):
                steps = round((item.due - item.start) / self.step) + 1
                seen = [self.value_at(item.start + k * self.step) for k in range(steps)]
                if seen and all(math.isfinite(v) for v in seen):
                    self.peak_covered.append(max(seen) <= item.peak + 1e-12)

    def observed_seconds(self) -> float:
        """From the oldest observed (finite) point to the newest point: how much history the
        model really has. The oldest one is cached until the ring drops it."""
        if self.start is None or not self.size:
            return 0.0
        oldest = self._oldest_finite
        if oldest is None or oldest < self.start:
            finite = np.flatnonzero(np.isfinite(self.values))
            oldest = self.start + float(finite[0]) * self.step if finite.size else None
            self._oldest_finite = oldest
        last = self.last
        return 0.0 if oldest is None or last is None else last - oldest + self.step

    def newest_finite(self) -> float | None:
        if self.start is None or not self.size:
            return None
        if math.isfinite(self._at(self.size - 1)):  # the usual case: no scan of the history
            return self.start + (self.size - 1) * self.step
        finite = np.flatnonzero(np.isfinite(self.values))
        if not finite.size:
            return None
        return self.start + float(finite[-1]) * self.step


def _fetch_window(state: _SignalState, now: datetime) -> tuple[float, float]:
    """Epoch seconds of the first and last point the next fetch asks for: the whole history
    at first, then only what follows the newest point (``start > end``: nothing new)."""
    step = state.step
    end = math.floor(now.timestamp() / step) * step
    oldest = end - (state.capacity - 1) * step
    last = state.last
    start = oldest if last is None else max(last + step, oldest)
    return start, end


@dataclass(frozen=True, eq=False)
class FetchPlan:
    """One range query of one target's cycle that a batched query can answer."""

    reconciler: TargetReconciler
    template: str
    metric: str
    labels: Mapping[str, str]
    start: float
    end: float
    step: float
    kind: str = "sum"
    """What the batched query computes per target (``prometheus.batch_shape``)."""


class GroupedMetricSource(Protocol):
    """A source that can answer a batched query split by labels (met by
    :class:`~predictive_scaler.prometheus.PrometheusSource`)."""

    async def fetch_range_grouped(
        self,
        query: str,
        by: Sequence[str],
        start: datetime,
        end: datetime,
        step_seconds: float,
    ) -> RangeResult | GroupedRanges: ...


DEFAULT_BATCH_SIZE: Final = 100
"""Most targets per batched query (keeps the regex and the URL short)."""
DEFAULT_BATCH_SAMPLES: Final = 200_000
"""Most samples per batched answer: the JSON of a first fetch (7 days at 1 m is 10,080
points per target) is parsed into Python objects, about 150 bytes a sample, so this keeps a
batch near 30 MB instead of hundreds."""


async def prefetch_batched(
    plans: Sequence[FetchPlan],
    source: GroupedMetricSource,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int = DEFAULT_BATCH_SAMPLES,
    concurrency: int = 2,
) -> int:
    """Answer many targets' range queries with few batched ones, and hand each target its
    part (:meth:`TargetReconciler.accept_prefetched`); returns the number of queries made.

    Plans are grouped by (metric, label names, start, end, step): targets that share the
    query shape and the window. Each group becomes ``sum by (<labels>) (metric{l=~"a|b"})``
    in chunks of at most ``batch_size`` targets and ``max_samples`` samples; the answer for a
    target is the group of its label values, judged exactly as its own query's answer would
    be. A failed batch is an ERROR for each of its targets, as their own queries would have
    been. Targets whose queries have another shape keep their own queries (nothing is
    prefetched for them).
    """
    groups: dict[tuple[object, ...], list[FetchPlan]] = {}
    for plan in plans:
        key = (plan.metric, plan.kind, tuple(plan.labels), plan.start, plan.end, plan.step)
        groups.setdefault(key, []).append(plan)
    chunks = []
    for members in groups.values():
        first = members[0]
        points = math.floor((first.end - first.start) / first.step + 1e-9) + 1
        size = max(1, min(batch_size, max_samples // points))
        chunks += [members[i : i + size] for i in range(0, len(members), size)]
    limit = asyncio.Semaphore(max(1, concurrency))

    async def run(chunk: list[FetchPlan]) -> None:
        first = chunk[0]
        query, names = render_batch_query(first.metric, [p.labels for p in chunk], kind=first.kind)
        async with limit:
            answer = await source.fetch_range_grouped(
                query,
                names,
                datetime.fromtimestamp(first.start, UTC),
                datetime.fromtimestamp(first.end, UTC),
                first.step,
            )
        for plan in chunk:
            if isinstance(answer, RangeResult):
                result = answer
            else:
                result = answer.get(tuple(plan.labels[name] for name in names))
            plan.reconciler.accept_prefetched(plan, result)

    await asyncio.gather(*(run(chunk) for chunk in chunks))
    return len(chunks)


# ---------------------------------------------------------------------------- reconciler


class TargetReconciler:
    """Runs cycles for one target. Not safe to run two cycles of one target at once."""

    def __init__(
        self,
        target: Target,
        source: MetricSource,
        kube: HpaApi,
        *,
        clock: Clock = _utc_now,
        may_patch: Callable[[], bool] = lambda: True,
        dry_run: bool = False,
        emit_events: bool = True,
        fit_runner: FitRunner = _fit_in_thread,
        logger: Logger | None = None,
    ) -> None:
        self.target = target
        self.source = source
        self.kube = kube
        self.clock = clock
        self.may_patch = may_patch
        self.dry_run = dry_run or target.policy.dry_run
        self.emit_events = emit_events
        self.fit_runner = fit_runner
        self.log = logger or get_logger(target=target.id)
        p = target.policy
        self.settings = ForecastSettings(
            step_seconds=p.step_seconds,
            horizon_seconds=p.horizon_seconds,
            model=p.model,
            quantile=p.quantile,
            floor_quantile=p.floor_quantile,
            seasons=p.seasons,
            history_seconds=p.history_seconds,
            refit_interval_seconds=p.refit_interval_seconds,
            max_age_seconds=p.stale_after_seconds,
        )
        self.decision_policy = DecisionPolicy(
            scale_up_step=p.scale_up_step,
            scale_down_delay_seconds=p.scale_down_delay_seconds,
            scale_down_step=p.scale_down_step,
            missing_data_hold_seconds=p.missing_data_hold_seconds,
        )
        self._signals = self._fresh_signals()
        self._history = DecisionHistory()
        self._history_known = False
        """Whether the history is this process's own (or handed over on a reload); until then
        the first cycle takes it from the HPA's state annotation."""
        self.shadow: DryRunShadow | None = None
        """In dry run, the minReplicas and annotations it would have applied."""
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
        self._owner_reported: ForeignOwner | None = None
        """The owner the last Warning Event was about (one Event per owner, not per cycle)."""
        self._owner_logged: ForeignOwner | None = None
        self._info_stale_since: datetime | None = None
        """First cycle of the current run whose reason code or model differed from the HPA's
        annotations (``annotations.decide_info_refresh``)."""

    @property
    def policy(self) -> Policy:
        return self.target.policy

    @property
    def history(self) -> DecisionHistory:
        """The decision's clocks, passed to the next cycle."""
        return self._history

    @history.setter
    def history(self, value: DecisionHistory) -> None:
        # A history set from outside (a reload hands the old reconciler's over) is fresher
        # than the annotation, which is then not read; an empty one (handed over before the
        # old reconciler's first cycle) carries no clocks, so the annotation's still count.
        self._history = value
        self._history_known = self._history_known or value != DecisionHistory()

    def _adopt_stored_clocks(self, snapshot: HpaSnapshot, now: datetime) -> None:
        """On the first cycle, continue the clocks of the process that wrote the HPA's state
        annotation. Missing or unusable state starts them now (a hold or delay can then only
        end later than the old process would have ended it); unusable state is logged once."""
        if self._history_known:
            return
        self._history_known = True
        raw = snapshot.annotations.get(ANNOTATION_STATE)
        if raw is None:
            return
        try:
            self._history = restore_history(decode_clock_state(raw), now)
        except StateError as error:
            self.log.warning("state_annotation_ignored", error=str(error), value=raw[:200])
            return
        self.log.info(
            "state_restored",
            bad_since=_iso_or_none(self._history.bad_since),
            tracking_since=_iso_or_none(self._history.tracking_since),
            peaks=len(self._history.recommendations),
        )

    def _fresh_signals(self) -> dict[str, _SignalState]:
        p, t = self.target.policy, self.target
        capacity = steps_for(p.history_seconds, p.step_seconds)
        return {
            s.name: _SignalState(
                s,
                TargetForecaster(self.settings),
                capacity,
                p.step_seconds,
                key=f"{t.namespace}/{t.name}/{s.name}",
            )
            for s in t.signals
        }

    async def _resolve_pods(self, snapshot: HpaSnapshot, now: datetime) -> None:
        """Find the target's pods as the HPA controller does: from its scale target's
        ``status.selector``, rendered into ``${matchers}``. A configured ``selector`` wins.
        Read again when the scale target changes, else every :data:`SELECTOR_REFRESH_SECONDS`;
        when the pods change, the buffered history (of other pods) is dropped."""
        if self.target.selector:
            return
        reader = getattr(self.kube, "read_scale_selector", None)
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
        except ValueError as error:
            self.log.warning("scale_selector_unusable", selector=selector, error=str(error))
            return
        labels = {"namespace": self.target.namespace, **equal}
        matchers = ",".join(x for x in (render_matchers(labels), *other) if x)
        if self.pods_selector is not None or any(s.size for s in self._signals.values()):
            self._signals = self._fresh_signals()  # history of other pods
        self.log.info("pods_selected", selector=selector, matchers=matchers)
        self.pods_selector, self.match_labels = selector, labels
        self._set_matchers, self.matchers = other, matchers

    # ------------------------------------------------------------------ the cycle

    def plan_fetches(self, now: datetime) -> list[FetchPlan]:
        """The range queries this cycle will make (when ``now`` is the cycle's time) that a
        batched query can answer: templates of the preset shape only."""
        plans: list[FetchPlan] = []
        for state in self._signals.values():
            start, end = _fetch_window(state, now)
            signal = state.signal
            windows: list[tuple[str | None, float]] = [(reporting_pods_template(signal.query), end)]
            if start <= end:
                windows += [
                    (signal.query, start),
                    (fresh_samples_template(signal.query, state.step), start),
                    (latest_sample_template(signal.query), end),
                    (signal.queue_query, start),
                    (signal.running_query, start),
                ]
            for template, first in windows:
                shape = batch_shape(template) if template is not None else None
                if template is None or shape is None:
                    continue
                kind, metric = shape
                if self._set_matchers:
                    continue  # a set-based pod selector has no batched form
                labels = self.match_labels
                plans.append(
                    FetchPlan(self, template, metric, labels, first, end, state.step, kind=kind)
                )
        return plans

    def accept_prefetched(self, plan: FetchPlan, result: RangeResult) -> None:
        """Hold a batched answer for this cycle's fetch of ``plan`` (used once)."""
        key = (plan.template, plan.start, plan.end, plan.step, tuple(plan.labels.items()))
        self._prefetched[key] = result

    async def reconcile(self) -> CycleReport:
        """One cycle. Raises only for unexpected failures; API failures are reported."""
        try:
            return await self._reconcile()
        finally:
            self._prefetched.clear()  # an answer not used this cycle is stale by the next

    async def _reconcile(self) -> CycleReport:
        now = self.clock()
        t = self.target
        try:
            snapshot = await self.kube.read_hpa(t.namespace, t.name)
        except KubeApiError as error:
            self.log.warning("hpa_read_failed", status=error.status, error=str(error))
            signals = tuple(self._idle_report(s) for s in self._signals.values())
            return CycleReport(
                t.id, t.namespace, t.name, now, signals, error=str(error), error_status=error.status
            )

        self._adopt_stored_clocks(snapshot, now)
        await self._resolve_pods(snapshot, now)
        reports = [
            self._with_target(await self._contained_signal(state, now), snapshot, state.signal)
            for state in self._signals.values()
        ]
        return await self._decide_and_apply(snapshot, reports, now)

    async def _contained_signal(self, state: _SignalState, now: datetime) -> SignalReport:
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

    async def _decide_and_apply(
        self, snapshot: HpaSnapshot, reports: list[SignalReport], now: datetime
    ) -> CycleReport:
        t = self.target
        signal_forecasts = [
            SignalForecast(
                r.name,
                r.upper_max if r.problem is None else None,
                r.target_per_pod or 1.0,
                r.problem,
                r.partial if r.problem is None else None,
                floor=r.floor if r.problem is None else None,
            )
            for r in reports
        ]
        for r in reports:
            if r.problem is not None:
                self.log.warning("metrics_missing", signal=r.name, problem=r.problem)
            elif r.partial is not None:
                self.log.warning("metrics_partial", signal=r.name, partial=r.partial)
        patch_result: str | None = None
        real = snapshot
        if self.dry_run and self.shadow is not None:
            snapshot = self.shadow.view(real)
        before = snapshot.min_replicas
        start_history = self.history
        base, _ = determine_base(snapshot)
        decision: Decision | None = None
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            owner = find_foreign_owner(snapshot)
            if owner is not None:  # checked on every read: a re-read may show a new owner
                return await self._leave_to_owner(snapshot, owner, signal_forecasts, reports, now)
            self._owner_reported = self._owner_logged = None
            base, edited = determine_base(snapshot)
            if edited:
                self.log.info(
                    "user_edit_adopted",
                    base=base,
                    annotated_base=snapshot.base_min_replicas,
                    applied=snapshot.annotations.get(ANNOTATION_APPLIED_MIN_REPLICAS),
                )
                # The user took over: forget the stabilisation we built on our own value.
                start_history = DecisionHistory()
            decision = decide_min_replicas(
                signal_forecasts,
                HpaLimits(
                    snapshot.min_replicas,
                    snapshot.max_replicas,
                    base,
                    current_replicas=snapshot.current_replicas,
                ),
                self.decision_policy,
                start_history,
                now,
            )
            annotations = self._annotations(base, decision, reports, now)
            # The clocks are written when a restart from the stored ones would act sooner,
            # or much later, than this process; else the stored value stays as it is, even
            # when other annotations are written (a closer copy would only have to be
            # corrected again when a need flips back).
            window = self.decision_policy.scale_down_delay_seconds
            clocks = _stored_clocks(snapshot.annotations)
            write_clocks = decide_clock_write(clocks, decision.history, now, window)
            if write_clocks or clocks is None:
                annotations[ANNOTATION_STATE] = encode_clock_state(
                    compute_clock_state(decision.history, now, window)
                )
            # Only minReplicas and state are worth a write; the reason, model and forecast
            # ride along, and on their own wait until they have differed for a while.
            refresh, info_stale_since = decide_info_refresh(
                snapshot.annotations, annotations, self._info_stale_since, now
            )
            wanted = (
                decision.min_replicas != snapshot.min_replicas
                or state_changed(snapshot.annotations, annotations)
                or write_clocks
                or refresh
            )
            self.log.info(
                "min_replicas_decided",
                current=snapshot.min_replicas,
                recommended=decision.min_replicas,
                needed=decision.needed,
                base=base,
                reason=decision.reason,
                message=decision.message,
            )
            if not wanted:
                break
            if self.dry_run or not self.may_patch():
                patch_result = "dry_run"
                self.log.info(
                    "min_replicas_recommended",
                    old=snapshot.min_replicas,
                    new=decision.min_replicas,
                    reason=decision.reason,
                    dry_run=self.dry_run,
                    leader=not self.dry_run and self.may_patch(),
                )
                break
            try:
                patched = await self.kube.patch_hpa_min_replicas(
                    snapshot, decision.min_replicas, annotations
                )
            except ConflictError:
                patch_result = "conflict"
                self.log.info("patch_conflicted", attempt=attempt)
                try:
                    snapshot = await self.kube.read_hpa(t.namespace, t.name)
                except KubeApiError as error:
                    self.log.warning("hpa_read_failed", status=error.status, error=str(error))
                    break
                continue
            except KubeApiError as error:
                patch_result = "failed"
                self.log.warning("patch_failed", status=error.status, error=str(error))
                break
            patch_result = "applied"
            old = snapshot.min_replicas
            snapshot = patched
            if old != decision.min_replicas:
                self.log.info(
                    "min_replicas_patched",
                    old=old,
                    new=decision.min_replicas,
                    reason=decision.reason,
                )
                await self._event(
                    patched,
                    decision.reason,
                    f"minReplicas {old} -> {decision.min_replicas}: {decision.message}",
                    now,
                )
            else:
                self.log.info("annotations_patched", reason=decision.reason)
            break
        else:
            self.log.warning("patch_abandoned", attempts=MAX_CONFLICT_RETRIES)
        assert decision is not None  # the loop runs at least once
        self.history = decision.history
        wrote = patch_result in ("applied", "dry_run")  # dry run: into the shadow
        self._info_stale_since = None if wrote else info_stale_since
        if self.dry_run:
            written = _merged(snapshot.annotations, annotations) if wanted else snapshot.annotations
            self.shadow = DryRunShadow(decision.min_replicas, written, real.min_replicas)
            snapshot = real  # nothing was applied
        return CycleReport(
            t.id,
            t.namespace,
            t.name,
            now,
            tuple(reports),
            min_replicas_before=before,
            max_replicas=snapshot.max_replicas,
            current_replicas=snapshot.current_replicas,
            base_min_replicas=base,
            recommended=decision.min_replicas,
            applied=snapshot.min_replicas,
            reason=decision.reason,
            message=decision.message,
            patch_result=patch_result,
        )

    async def _leave_to_owner(
        self,
        snapshot: HpaSnapshot,
        owner: ForeignOwner,
        forecasts: Sequence[SignalForecast],
        reports: Sequence[SignalReport],
        now: datetime,
    ) -> CycleReport:
        """An HPA another controller owns: decide (for the report and /metrics) but never
        patch it, not even its annotations; say why once per owner in a Warning Event."""
        t = self.target
        current = snapshot.min_replicas
        decision = decide_min_replicas(
            forecasts,
            HpaLimits(current, snapshot.max_replicas, current),
            self.decision_policy,
            self.history,
            now,
        )
        self.history = decision.history
        if owner != self._owner_logged:
            self.log.warning(
                "hpa_owned_elsewhere", reason=owner.reason, owner=owner.owner, why=owner.evidence
            )
            self._owner_logged = owner
        else:
            self.log.debug("hpa_owned_elsewhere", reason=owner.reason, owner=owner.owner)
        # One Event per owner, from the leader only (a follower or a dry run writes nothing).
        if owner != self._owner_reported and not self.dry_run and self.may_patch():
            await self._event(snapshot, owner.reason, owner.message, now, type_="Warning")
            self._owner_reported = owner
        return CycleReport(
            t.id,
            t.namespace,
            t.name,
            now,
            tuple(reports),
            min_replicas_before=current,
            max_replicas=snapshot.max_replicas,
            current_replicas=snapshot.current_replicas,
            base_min_replicas=current,
            recommended=decision.min_replicas,
            applied=current,
            reason=owner.reason,
            message=owner.message,
            owner=owner.owner,
        )

    async def _event(
        self,
        snapshot: HpaSnapshot,
        reason: str,
        message: str,
        now: datetime,
        *,
        type_: Literal["Normal", "Warning"] = "Normal",
    ) -> None:
        if not self.emit_events:
            return
        try:
            await self.kube.create_event(snapshot, reason, message, now=now, type_=type_)
        except KubeApiError as error:
            # The patch stands; a lost Event only costs the explanation in `describe`.
            self.log.warning("event_failed", status=error.status, error=str(error))

    def _annotations(
        self, base: int, decision: Decision, reports: Sequence[SignalReport], now: datetime
    ) -> dict[str, str | None]:
        good = [r for r in reports if r.problem is None and r.needed is not None]
        lead = max(good, key=lambda r: r.needed or 0) if good else None
        forecast: str | None = None
        if lead is not None:
            forecast = json.dumps(
                {
                    "signal": lead.name,
                    "mean": _round(lead.mean),
                    "upper": _round(lead.upper_max),
                    "horizonSeconds": lead.horizon_seconds,
                    "quantile": lead.quantile,
                    "at": _iso(now),
                },
                separators=(",", ":"),
            )
        models = sorted({r.model for r in reports if r.model})
        return {
            ANNOTATION_BASE_MIN_REPLICAS: str(base),
            ANNOTATION_APPLIED_MIN_REPLICAS: str(decision.min_replicas),
            ANNOTATION_LAST_FORECAST: forecast,
            ANNOTATION_MODEL: ",".join(models) if models else None,
            ANNOTATION_REASON: f"{decision.reason}: {decision.message}"[:1000],
            ANNOTATION_UPDATED_AT: _iso(now),
        }

    # ------------------------------------------------------------------ restore

    async def restore(self) -> bool:
        """Give the HPA its base minReplicas back and remove our annotations.

        Returns True when done (or nothing was ours), False when it must be retried (an API
        failure, or this instance may not patch). A base the user changed by hand since our
        last patch is kept as it is.
        """
        if self.dry_run or not self.may_patch():
            return False
        t = self.target
        for _attempt in range(MAX_CONFLICT_RETRIES):
            try:
                snapshot = await self.kube.read_hpa(t.namespace, t.name)
            except KubeApiError as error:
                self.log.warning("hpa_read_failed", status=error.status, error=str(error))
                return error.status == 404  # a deleted HPA needs nothing back
            if not any(key in snapshot.annotations for key in MANAGED_ANNOTATIONS):
                return True
            owner = find_foreign_owner(snapshot)
            if owner is not None:
                # Its owner writes minReplicas; a patch would only start the fight again.
                self.log.warning("restore_skipped", reason=owner.reason, owner=owner.owner)
                return True
            base, _edited = determine_base(snapshot)
            if not self.may_patch():
                return False
            try:
                await self.kube.patch_hpa_min_replicas(
                    snapshot, base, dict.fromkeys(MANAGED_ANNOTATIONS)
                )
            except ConflictError:
                continue
            except KubeApiError as error:
                self.log.warning("restore_failed", status=error.status, error=str(error))
                return False
            self.log.info("base_restored", old=snapshot.min_replicas, new=base)
            if snapshot.min_replicas != base:
                await self._event(
                    snapshot,
                    REASON_BASE_RESTORED,
                    f"minReplicas {snapshot.min_replicas} -> {base}: the target is no longer "
                    "managed by predictive-scaler",
                    self.clock(),
                )
            return True
        return False

    # ------------------------------------------------------------------ per signal

    def _idle_report(self, state: _SignalState) -> SignalReport:
        return SignalReport(
            state.signal.name,
            "not evaluated: the HPA could not be read",
            self.settings.horizon_steps * self.settings.step_seconds,
            self.settings.quantile,
        )

    def _with_target(
        self, report: SignalReport, snapshot: HpaSnapshot, signal: Signal
    ) -> SignalReport:
        per_pod = signal.target_per_pod
        if per_pod is None and signal.hpa_metric is not None:
            for name in HPA_METRIC_ALIASES.get(signal.hpa_metric, (signal.hpa_metric,)):
                per_pod = snapshot.target_average_value_for(name)
                if per_pod is not None:
                    break
        if per_pod is None or not per_pod > 0:
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

    async def _forecast_signal(self, state: _SignalState, now: datetime) -> SignalReport:
        p = self.policy
        horizon = self.settings.horizon_steps * self.settings.step_seconds
        base = SignalReport(state.signal.name, None, horizon, p.quantile)
        problem, new_start, new, partial = await self._fetch(state, now)
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
                _Pending(
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
        state: _SignalState,
        window: WindowForecast,
        problem: str | None,
    ) -> SignalReport:
        backtest = state.forecaster.backtest_
        return replace(
            base,
            problem=problem,
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
        self, state: _SignalState, now: datetime
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
        start, end = _fetch_window(state, now)
        last = state.last
        if last is not None and last + step < start:
            state.reset()  # gap longer than the history
        if start > end:
            return None, None, None, None
        read = await fetch_signal_demand(state.signal, self._range, start, end, step, self.log)
        if read.newest_sample is not None:
            state.newest_sample = max(read.newest_sample, state.newest_sample or read.newest_sample)
        if read.values is None:
            return read.problem, None, None, read.partial
        return read.problem, start, read.values, read.partial

    async def _reporting_pods(
        self, state: _SignalState, now: datetime
    ) -> tuple[int | None, str | None]:
        """Pods the newest step of the demand sums over, and why they could not be counted."""
        template = reporting_pods_template(state.signal.query)
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

    def _settle(self, state: _SignalState) -> None:
        state.settle()

    async def _refit_or_observe(self, state: _SignalState, new: FloatArray) -> str | None:
        """Refit when due (off the event loop), else absorb the new points; the problem if the
        model could not be fitted."""
        forecaster = state.forecaster
        if not forecaster.needs_refit():
            forecaster.observe(new)
            return None
        window = state.window(self.settings.history_points)
        fit = forecaster.fit_job(window)
        # The first fit of a target counts as partly aged, so the refits of targets started
        # together spread over the refit interval (never later than it).
        age = (
            0
            if forecaster.model is not None
            else refit_offset(state.key, self.settings.refit_points)
        )
        try:
            result = await self.fit_runner(fit)
        except (InsufficientHistory, InvalidSeries) as error:
            state.fit_problem = f"history too short or unusable: {error}"
            self.log.warning("forecast_fit_failed", signal=state.signal.name, error=str(error))
            if forecaster.model is not None:
                forecaster.observe(new)  # keep the old model going on the new points
            return state.fit_problem
        except Exception as error:  # a dead worker, a fit over its budget, a model's bug
            state.fit_problem = f"fit failed: {type(error).__name__}: {error}"
            self.log.warning(
                "forecast_fit_failed", signal=state.signal.name, error=state.fit_problem
            )
            if forecaster.model is not None:
                forecaster.observe(new)
            return state.fit_problem
        forecaster.adopt(result, age_points=age, history=window)
        state.fit_problem = None
        self.log.info(
            "forecast_refitted",
            signal=state.signal.name,
            requested=result.requested,
            model=str(result.model.describe().get("model")),
            points=int(window.size),
            notes=result.notes or None,
        )
        return None


_SELECTOR_REQUIREMENT: Final = re.compile(
    r"\s*(?:(?P<neg>!)\s*(?P<absent>[^\s!=,()]+)"
    r"|(?P<key>[^\s!=,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?)\s*(?:,|$)"
)


def prometheus_label_name(label: str) -> str:
    """A Kubernetes label key as Prometheus' Kubernetes discovery names it on a pod's series
    (``__meta_kubernetes_pod_label_<name>`` mapped by ``labelmap``): every character outside
    ``[a-zA-Z0-9_]`` becomes ``_`` (``app.kubernetes.io/name`` -> ``app_kubernetes_io_name``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def selector_matchers(selector: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """A serialized Kubernetes label selector (a scale's ``status.selector``, e.g.
    ``app=nim,tier in (a,b),!canary``) as PromQL: equality requirements as labels, the others
    as rendered matchers. ``ValueError`` for text that is not a selector."""
    equal: dict[str, str] = {}
    other: list[str] = []
    position = 0
    text = selector.strip()
    while position < len(text):
        match = _SELECTOR_REQUIREMENT.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"not a label selector: {selector!r}")
        position = match.end()
        if match.group("neg"):
            other.append(f'{prometheus_label_name(match.group("absent"))}=""')
            continue
        name = prometheus_label_name(match.group("key"))
        op, value = match.group("op"), match.group("value")
        if op in ("=", "=="):
            equal[name] = value
        elif op == "!=":
            other.append(f'{name}!="{escape_promql_string(value)}"')
        elif match.group("set"):
            values = [v.strip() for v in match.group("values").split(",") if v.strip()]
            regex = "|".join(re.escape(v) for v in values)
            op_text = "=~" if match.group("set") == "in" else "!~"
            other.append(f'{name}{op_text}"{escape_promql_string(regex)}"')
        else:
            other.append(f'{name}!=""')  # the key exists
    return equal, tuple(other)


def _fresh_until(state: _SignalState, stale_after_seconds: float) -> datetime | None:
    newest = state.newest_finite()
    if newest is None:
        return None
    return datetime.fromtimestamp(newest + stale_after_seconds, UTC)


def _stored_clocks(annotations: Mapping[str, str]) -> ClockState | None:
    """The HPA's state annotation, or None when missing or unusable (logged on adoption)."""
    raw = annotations.get(ANNOTATION_STATE)
    if raw is None:
        return None
    try:
        return decode_clock_state(raw)
    except StateError:
        return None


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _iso(moment)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
