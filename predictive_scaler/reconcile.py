"""One cycle for one target: fetch -> demand -> forecast -> decide -> apply -> report.

All I/O goes through narrow seams passed in (:class:`MetricSource`, :class:`HpaApi`, a clock,
a leadership check and a fit runner), so tests drive the real Prometheus adapter against the
real server and the real Kubernetes adapter against the API double, with a fake clock.

The read-and-forecast half (pods, demand, buffers, models) is :class:`~predictive_scaler.
signal_read.SignalReader`; this module decides from its reports and applies the decision.

State kept in memory per target (demand buffers, forecasters, the decision history, past
forecasts waiting to come due) is only an optimisation: everything needed after a restart
is in the HPA's annotations, and a fresh reconciler re-reads the whole history once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, Literal

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
    later_clocks,
    restore_history,
    state_changed,
)
from predictive_scaler.batching import prefetch_batched
from predictive_scaler.config import Target
from predictive_scaler.decision import (
    Decision,
    DecisionHistory,
    DecisionPolicy,
    HpaLimits,
    SignalForecast,
    decide_ambiguous_selector,
    decide_min_replicas,
)
from predictive_scaler.logs import Logger, get_logger
from predictive_scaler.ownership import ForeignOwner, find_foreign_owner
from predictive_scaler.pod_overlap import PodClaims, PodOverlap
from predictive_scaler.policy_settings import decision_policy
from predictive_scaler.ports import Clock, FitCall, HpaApi, MetricSource
from predictive_scaler.signal_buffer import LIVE_ERROR_WINDOW
from predictive_scaler.signal_read import SignalReader, _fit_in_thread
from predictive_scaler.values import (
    ConflictError,
    CycleReport,
    HpaSnapshot,
    KubeApiError,
    SignalReport,
)

# LIVE_ERROR_WINDOW and prefetch_batched are imported only for the tests written before the
# ring buffer and the batching had modules of their own, which still import them from here.
__all__ = [
    "LIVE_ERROR_WINDOW",
    "MANAGED_ANNOTATIONS",
    "MAX_CONFLICT_RETRIES",
    "CycleReport",
    "DryRunShadow",
    "FitCall",
    "HpaApi",
    "MetricSource",
    "SignalReport",
    "TargetReconciler",
    "determine_base",
    "prefetch_batched",
]

MAX_CONFLICT_RETRIES: Final = 3
"""Attempts of read-decide-patch when the HPA changes under us (409)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


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


# ---------------------------------------------------------------------------- reconciler


class TargetReconciler(SignalReader):
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
        fit_runner: FitCall = _fit_in_thread,
        logger: Logger | None = None,
        progressive: bool = False,
        background_fits: asyncio.Semaphore | None = None,
        background_reads: asyncio.Semaphore | None = None,
        pod_claims: PodClaims | None = None,
    ) -> None:
        super().__init__(
            target,
            source,
            logger=logger or get_logger(target=target.id),
            scale_selector=getattr(kube, "read_scale_selector", None),
            fit_runner=fit_runner,
            progressive=progressive,
            background_fits=background_fits,
            background_reads=background_reads,
            pod_claims=pod_claims,
        )
        self.kube = kube
        self.clock = clock
        self.may_patch = may_patch
        self.dry_run = dry_run or target.policy.dry_run
        self.emit_events = emit_events
        self.decision_policy: DecisionPolicy = decision_policy(target.policy)
        self._history = DecisionHistory()
        self._history_known = False
        """Whether the history is this process's own (or handed over on a reload); until then
        the first cycle takes it from the HPA's state annotation."""
        self._followed = False
        """Whether the last cycle ran without the right to patch (a follower's)."""
        self.shadow: DryRunShadow | None = None
        """In dry run, the minReplicas and annotations it would have applied."""
        self._owner_reported: ForeignOwner | None = None
        """The owner the last Warning Event was about (one Event per owner, not per cycle)."""
        self._owner_logged: ForeignOwner | None = None
        self._overlaps_logged: tuple[PodOverlap, ...] = ()
        self._overlaps_reported: tuple[PodOverlap, ...] = ()
        """The overlaps the last log line and Warning Event were about (once per change)."""
        self._info_stale_since: datetime | None = None
        """First cycle of the current run whose reason code or model differed from the HPA's
        annotations (``annotations.decide_info_refresh``)."""

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

    # ------------------------------------------------------------------ the cycle

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
            signals = self.idle_reports()
            return CycleReport(
                t.id, t.namespace, t.name, now, signals, error=str(error), error_status=error.status
            )

        leading = not self.dry_run and self.may_patch()
        own = self._history if leading and self._followed else None
        if own is not None:
            # A follower's clocks are its own view (its data may have been bad while the
            # leader's was good); the stored ones are what the leader acted on, but may be
            # stale (a hold that ended while no leader wrote). Continue the later of each,
            # so a hold never ends sooner than either view would end it.
            self._history, self._history_known = DecisionHistory(), False
        self._followed = not leading
        self._adopt_stored_clocks(snapshot, now)
        if own is not None:
            self._history = later_clocks(self._history, own)
        reports = await self.read_signals(snapshot, now)
        return await self._decide_and_apply(snapshot, reports, now)

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
        overlaps = self.pod_overlaps()
        await self._report_overlaps(snapshot, overlaps, now)
        certain = [o for o in overlaps if o.certain]
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
            limits = HpaLimits(
                snapshot.min_replicas,
                snapshot.max_replicas,
                base,
                current_replicas=snapshot.current_replicas,
            )
            if certain:
                decision = decide_ambiguous_selector(limits, _overlap_text(certain))
            else:
                decision = decide_min_replicas(
                    signal_forecasts, limits, self.decision_policy, start_history, now
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
            overlaps=overlaps,
        )

    async def _report_overlaps(
        self, snapshot: HpaSnapshot, overlaps: tuple[PodOverlap, ...], now: datetime
    ) -> None:
        """A log line naming both targets and a Warning Event on this target's HPA, once per
        change of its overlaps (the other target's cycle warns on its own HPA)."""
        if overlaps != self._overlaps_logged:
            for o in overlaps:
                self.log.warning("pods_overlap", other=o.other, certain=o.certain, why=o.why)
            if not overlaps and self._overlaps_logged:
                self.log.info("pods_overlap_ended")
            self._overlaps_logged = overlaps
        if not overlaps:
            self._overlaps_reported = ()  # a new overlap later is told again
            return
        if overlaps == self._overlaps_reported:
            return
        if self.dry_run or not self.may_patch():
            return  # from the leader only, as every Event
        certain = [o for o in overlaps if o.certain]
        if certain:
            message = f"{_overlap_text(certain)}: minReplicas held, neither raised nor lowered"
        else:
            message = (
                f"pods may overlap with {_overlap_list(overlaps)}: still scaled on its own sum, "
                "which would count such pods for both targets"
            )
        reason = "AmbiguousSelector" if certain else "PossibleSelectorOverlap"
        await self._event(snapshot, reason, message[:1000], now, type_="Warning")
        self._overlaps_reported = overlaps

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
        forecast = forecast_annotation(lead, now) if lead is not None else None
        models = sorted({r.model for r in reports if r.model})
        return {
            ANNOTATION_BASE_MIN_REPLICAS: str(base),
            ANNOTATION_APPLIED_MIN_REPLICAS: str(decision.min_replicas),
            ANNOTATION_LAST_FORECAST: forecast,
            ANNOTATION_MODEL: ",".join(models) if models else None,
            ANNOTATION_REASON: f"{decision.reason}: {decision.message}"[:1000],
            ANNOTATION_UPDATED_AT: _iso(now),
        }


def forecast_annotation(lead: SignalReport, now: datetime) -> str:
    """The last-forecast annotation of the signal that needs the most replicas; with an
    objective, what it asked and whether the replay met it (the quantile is the chosen one)."""
    doc: dict[str, object] = {
        "signal": lead.name,
        "mean": _round(lead.mean),
        "upper": _round(lead.upper_max),
        "horizonSeconds": lead.horizon_seconds,
        "quantile": lead.quantile,
        "at": _iso(now),
    }
    if lead.objective is not None:
        doc["objective"] = {**lead.objective.spec, "met": lead.objective.met}
    return json.dumps(doc, separators=(",", ":"))


def _overlap_list(overlaps: Sequence[PodOverlap]) -> str:
    return "; ".join(f"{o.other} ({o.why})" for o in overlaps)


def _overlap_text(overlaps: Sequence[PodOverlap]) -> str:
    return f"pods overlap with {_overlap_list(overlaps)}; its demand is not its own"


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
