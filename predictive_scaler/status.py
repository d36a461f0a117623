"""``predictive-scaler status``: every managed HPA's state, from its annotations alone.

The controller keeps all its state in ``predictive-scaler.io/*`` annotations on the HPAs, so
what it last did is readable without Prometheus and without the controller running. The rows
are computed by pure functions (:func:`compute_rows`, :func:`format_table`,
:func:`format_json`) from HPA snapshots and ``now``; :func:`fetch_managed_hpas` is the only
read, a list of HPAs through the Kubernetes adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final

from predictive_scaler.annotations import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_PREFIX,
    ANNOTATION_REASON,
    ANNOTATION_UPDATED_AT,
)
from predictive_scaler.kube import KubeClient
from predictive_scaler.values import HpaSnapshot

__all__ = [
    "StatusRow",
    "compute_rows",
    "fetch_managed_hpas",
    "format_age",
    "format_json",
    "format_table",
]

# Reason codes (the annotation's part before ":") that mean the data was not usable.
_DATA_STATE: Final = {
    "FailedGetMetric": "missing",
    "PartialMetrics": "partial",
    "MissingDataDecay": "missing, decaying",
}


@dataclass(frozen=True)
class StatusRow:
    """One managed HPA as its annotations describe it; ``None`` where one is absent."""

    namespace: str
    hpa: str
    base: int | None
    """The user's own minReplicas (``base-min-replicas``)."""
    applied: int
    """spec.minReplicas now."""
    recommended: int | None
    """What the controller last decided (``applied-min-replicas``)."""
    max_replicas: int
    reason: str | None
    """The reason code (``TooFewReplicas``, ``FailedGetMetric``...)."""
    message: str | None
    model: str | None
    data: str
    """``ok``, ``missing``, ``partial``, ``missing, decaying`` or ``no forecast``."""
    forecast_upper: float | None
    """The leading signal's upper forecast from ``last-forecast``."""
    signal: str | None
    updated_at: str | None
    age_seconds: float | None
    """Seconds since ``updated-at``: the controller's last write, which happens only when
    minReplicas or its state changes (or a reason stayed different for
    ``annotations.INFO_REFRESH_SECONDS``), so a steady HPA ages without anything being wrong."""
    edited: bool
    """spec.minReplicas differs from what the controller applied: a hand edit (or another
    owner) the next cycle will take as the new base."""


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _time(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _row(snapshot: HpaSnapshot, now: datetime) -> StatusRow:
    notes = snapshot.annotations
    reason_text = notes.get(ANNOTATION_REASON)
    reason, message = None, None
    if reason_text is not None:
        code, _, rest = reason_text.partition(":")
        reason, message = code.strip() or None, rest.strip() or None
    forecast: dict[str, Any] = {}
    raw_forecast = notes.get(ANNOTATION_LAST_FORECAST)
    if raw_forecast:
        try:
            loaded = json.loads(raw_forecast)
        except ValueError:
            loaded = None
        forecast = loaded if isinstance(loaded, dict) else {}
    upper = forecast.get("upper")
    data = _DATA_STATE.get(reason or "", "ok")
    if data == "ok" and not forecast:
        data = "no forecast"
    updated = _time(notes.get(ANNOTATION_UPDATED_AT))
    recommended = _int(notes.get(ANNOTATION_APPLIED_MIN_REPLICAS))
    return StatusRow(
        namespace=snapshot.namespace,
        hpa=snapshot.name,
        base=_int(notes.get(ANNOTATION_BASE_MIN_REPLICAS)),
        applied=snapshot.min_replicas,
        recommended=recommended,
        max_replicas=snapshot.max_replicas,
        reason=reason,
        message=message,
        model=notes.get(ANNOTATION_MODEL),
        data=data,
        forecast_upper=float(upper) if isinstance(upper, int | float) else None,
        signal=str(forecast["signal"]) if "signal" in forecast else None,
        updated_at=notes.get(ANNOTATION_UPDATED_AT),
        age_seconds=None if updated is None else max((now - updated).total_seconds(), 0.0),
        edited=recommended is not None and recommended != snapshot.min_replicas,
    )


def compute_rows(snapshots: Iterable[HpaSnapshot], now: datetime) -> list[StatusRow]:
    """The managed HPAs among ``snapshots`` (any ``predictive-scaler.io/`` annotation), sorted
    by namespace and name."""
    managed = [
        s for s in snapshots if any(key.startswith(ANNOTATION_PREFIX) for key in s.annotations)
    ]
    return [_row(s, now) for s in sorted(managed, key=lambda s: (s.namespace, s.name))]


def format_age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d`` as kubectl prints ages; ``-`` when unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= size):
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


_COLUMNS: Final = (
    "NAMESPACE",
    "HPA",
    "BASE",
    "APPLIED",
    "RECOMMENDED",
    "MAX",
    "REASON",
    "MODEL",
    "DATA",
    "FORECAST",
    "AGE",
)


def format_table(rows: Sequence[StatusRow]) -> str:
    """A kubectl-style table, one line per HPA (``APPLIED*``: edited since the last cycle)."""
    if not rows:
        return "no HPA carries predictive-scaler annotations\n"
    lines = [list(_COLUMNS)]
    for r in rows:
        lines.append(
            [
                r.namespace,
                r.hpa,
                _cell(r.base),
                _cell(r.applied) + ("*" if r.edited else ""),
                _cell(r.recommended),
                _cell(r.max_replicas),
                _cell(r.reason),
                _cell(r.model),
                r.data,
                _cell(r.forecast_upper),
                format_age(r.age_seconds),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    text = "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
    return text + "\n"


def format_json(rows: Sequence[StatusRow]) -> str:
    """The rows as a JSON list (every field, ``null`` where absent)."""
    return json.dumps([asdict(r) for r in rows], indent=2) + "\n"


async def fetch_managed_hpas(kube: KubeClient, namespace: str | None = None) -> list[HpaSnapshot]:
    """Every HPA of ``namespace`` (all when ``None``); :func:`compute_rows` keeps ours."""
    return await kube.list_hpas(namespace)
