"""The values the loop passes around: HPA snapshots, object references, watch events and
the typed API errors of the Kubernetes side, and what one cycle of one target found, decided
and did (:class:`SignalReport`, :class:`CycleReport`: for the dispatcher, ``/metrics``, the
External Metrics API and the ``recommend`` command).

PURE: plain frozen data and arithmetic on it, no I/O, no event loop, no logger and no client
library. :mod:`predictive_scaler.kube` turns API responses into these; everything above it
(the reconciler, the informer, the restore queue, leader election) sees only these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, NamedTuple

from predictive_scaler.annotations import ANNOTATION_BASE_MIN_REPLICAS
from predictive_scaler.pod_overlap import PodOverlap

__all__ = [
    "HPA_API_VERSION",
    "HPA_KIND",
    "ConfigMapEvent",
    "ConflictError",
    "CycleReport",
    "ForbiddenError",
    "HpaList",
    "HpaSnapshot",
    "HpaWatchEvent",
    "KubeApiError",
    "KubeUnavailableError",
    "NotFoundError",
    "ObjectRef",
    "SignalReport",
    "parse_quantity",
]

HPA_API_VERSION: Final = "autoscaling/v2"
HPA_KIND: Final = "HorizontalPodAutoscaler"


# ---------------------------------------------------------------------------- errors


class KubeApiError(Exception):
    """A Kubernetes API request failed; ``status`` is the HTTP code (0: no response)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after_seconds = retry_after_seconds


class ConflictError(KubeApiError):
    """409: the object changed since it was read (or already exists); re-read and decide again."""


class NotFoundError(KubeApiError):
    """404: the object does not exist."""


class ForbiddenError(KubeApiError):
    """403: RBAC does not allow the request."""


class KubeUnavailableError(KubeApiError):
    """No HTTP answer: connection refused or reset, or the request timed out."""


# ---------------------------------------------------------------------------- quantities

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str | float) -> float:
    """A Kubernetes quantity (``"700m"``, ``"1"``, ``"0.7"``, ``"2k"``, ``"1Gi"``, ``"1e3"``)
    as a float. Raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in {"e", "E"}:
            return float(Decimal(number + suffix))
        return float(Decimal(number) * _SUFFIX[suffix])
    except InvalidOperation as error:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from error


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ObjectRef:
    """What an Event is about: any namespaced object."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str | None = None


@dataclass(frozen=True)
class HpaSnapshot:
    """One read of an ``autoscaling/v2`` HorizontalPodAutoscaler, as plain values."""

    namespace: str
    name: str
    resource_version: str
    min_replicas: int
    max_replicas: int
    current_replicas: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    metrics: Sequence[Mapping[str, Any]] = ()
    uid: str | None = None
    scale_target_ref: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    owner_references: Sequence[Mapping[str, Any]] = ()
    """``metadata.ownerReferences`` as read (``apiVersion``, ``kind``, ``name``, ``uid``,
    ``controller``): who else reconciles this HPA."""

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(HPA_API_VERSION, HPA_KIND, self.namespace, self.name, self.uid)

    @property
    def base_min_replicas(self) -> int | None:
        """The ``base-min-replicas`` annotation, ``None`` when absent or not a positive int."""
        raw = self.annotations.get(ANNOTATION_BASE_MIN_REPLICAS)
        try:
            value = int(raw) if raw is not None else None
        except ValueError:
            return None
        return value if value is not None and value >= 1 else None

    def target_average_value_for(self, metric_name: str) -> float | None:
        """The per-pod target of ``metric_name``: the ``averageValue`` of a Pods, External or
        Object metric whose target type is ``AverageValue``. ``None`` when the HPA has no such
        metric or its quantity does not parse (the caller then needs an explicit override)."""
        for metric in self.metrics:
            source_key = {"Pods": "pods", "External": "external", "Object": "object"}.get(
                str(metric.get("type"))
            )
            if source_key is None:
                continue
            source = metric.get(source_key) or {}
            if (source.get("metric") or {}).get("name") != metric_name:
                continue
            target = source.get("target") or {}
            if target.get("type") != "AverageValue" or target.get("averageValue") is None:
                continue
            try:
                return parse_quantity(target["averageValue"])
            except ValueError:
                return None
        return None

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> HpaSnapshot:
        """From the JSON form of the HPA (camelCase keys)."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            min_replicas=int(spec.get("minReplicas") or 1),
            max_replicas=int(spec.get("maxReplicas") or 0),
            current_replicas=int(status.get("currentReplicas") or 0),
            annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
            metrics=tuple(spec.get("metrics") or ()),
            uid=meta.get("uid"),
            scale_target_ref={
                str(k): str(v) for k, v in (spec.get("scaleTargetRef") or {}).items()
            },
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            owner_references=tuple(
                dict(ref) for ref in meta.get("ownerReferences") or () if isinstance(ref, Mapping)
            ),
        )


EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class ConfigMapEvent(NamedTuple):
    """One state of a watched ConfigMap, ``(event_type, data, resource_version)``;
    ``DELETED`` (with empty data) also reports a ConfigMap that is absent."""

    event_type: EventType
    data: Mapping[str, str]
    resource_version: str


class HpaList(NamedTuple):
    """One list of HPAs and the collection's ``resourceVersion`` to watch from."""

    items: list[HpaSnapshot]
    resource_version: str


class HpaWatchEvent(NamedTuple):
    """One event of an HPA watch: ``snapshot`` is ``None`` only for a ``BOOKMARK`` (which
    carries just the resourceVersion to resume from); a ``DELETED`` one carries the object's
    last state."""

    event_type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
    snapshot: HpaSnapshot | None
    resource_version: str


# ---------------------------------------------------------------------------- cycle reports


@dataclass(frozen=True)
class HeadroomReport:
    """The quantile an objective chose at the last refit (``predictive_scaler.objective``)."""

    objective: str
    """The objective in words."""
    spec: Mapping[str, float]
    """The objective as configured (``{"maxShortfallShare": 0.01}``)."""
    quantile: float | None
    """The quantile chosen; None: no choice (too little history), the policy's decides."""
    met: bool | None
    """Whether the replay met a ``maxShortfallShare`` (None for a price)."""
    reason: str


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
    """Calibrated upper bound of the window's peak: what the decision uses."""
    floor: float | None = None
    """The history floor the decision takes when above ``upper_max`` (None: off)."""
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
    objective: HeadroomReport | None = None
    """With ``policy.objective``: the quantile chosen at the last refit, and why."""
    freshness: Literal["samples", "grid"] = "samples"
    """What staleness is judged on: the samples' own timestamps (a query of the presets'
    shape, ``sum(METRIC{${matchers}})`` or ``sum(M1{${matchers}} or M2{${matchers}} ...)``),
    or, for any other query, the query's grid (the
    newest step with a value, which Prometheus' lookback fills up to 5 minutes past the last
    sample)."""

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
    overlaps: tuple[PodOverlap, ...] = ()
    """Other targets whose pods overlap this one's (a certain one holds it:
    ``AmbiguousSelector``)."""
