"""The controller's annotations on an HPA: their names, which are state and which are only
informational, and when a difference between the stored and the new ones is worth a write.

Pure: no I/O, no clock, no logging. The reconciler passes what the HPA carries, what it would
write now and ``now``, and writes only when this module says the difference matters.

Two kinds of annotation:

- **State** (:data:`STATE_ANNOTATIONS`): what a restarted controller needs to continue where
  the old one stopped (the user's base, the minReplicas we applied, the decision's clocks).
  A change is written at once.
- **Informational** (:data:`INFO_ANNOTATIONS`): the reason, the model, the last forecast and the
  time of the write, for ``kubectl`` and ``predictive-scaler status``. They ride along on every
  state write; on their own they are written only when their codes (the reason's code, the
  model) have differed from the stored ones on every cycle for :data:`INFO_REFRESH_SECONDS`,
  so a reason that flips from cycle to cycle never causes a write.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

__all__ = [
    "ANNOTATION_APPLIED_MIN_REPLICAS",
    "ANNOTATION_BASE_MIN_REPLICAS",
    "ANNOTATION_LAST_FORECAST",
    "ANNOTATION_MODEL",
    "ANNOTATION_PREFIX",
    "ANNOTATION_REASON",
    "ANNOTATION_UPDATED_AT",
    "INFO_ANNOTATIONS",
    "INFO_REFRESH_SECONDS",
    "MANAGED_ANNOTATIONS",
    "STATE_ANNOTATIONS",
    "compute_info_codes",
    "decide_info_refresh",
    "state_changed",
]

ANNOTATION_PREFIX: Final = "predictive-scaler.io/"
ANNOTATION_BASE_MIN_REPLICAS: Final = ANNOTATION_PREFIX + "base-min-replicas"
ANNOTATION_APPLIED_MIN_REPLICAS: Final = ANNOTATION_PREFIX + "applied-min-replicas"
ANNOTATION_LAST_FORECAST: Final = ANNOTATION_PREFIX + "last-forecast"
ANNOTATION_MODEL: Final = ANNOTATION_PREFIX + "model"
ANNOTATION_REASON: Final = ANNOTATION_PREFIX + "reason"
ANNOTATION_UPDATED_AT: Final = ANNOTATION_PREFIX + "updated-at"

STATE_ANNOTATIONS: Final = (ANNOTATION_BASE_MIN_REPLICAS, ANNOTATION_APPLIED_MIN_REPLICAS)
"""Written whenever they change."""
INFO_ANNOTATIONS: Final = (
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_REASON,
    ANNOTATION_UPDATED_AT,
)
"""Ride along on state writes; alone, written at most once per :data:`INFO_REFRESH_SECONDS`."""
MANAGED_ANNOTATIONS: Final = (*STATE_ANNOTATIONS, *INFO_ANNOTATIONS)
"""Every annotation the controller owns (removed when it gives the base back)."""

INFO_REFRESH_SECONDS: Final = 900.0
"""How long the reason's code or the model must have differed from the stored ones, on every
cycle, before they are written on their own. A flip that comes back within this time is
never written; a lasting change reaches ``status`` within this time (plus a cycle)."""


def state_changed(stored: Mapping[str, str], new: Mapping[str, str | None]) -> bool:
    """Whether any state annotation in ``new`` differs from what the HPA carries."""
    return any(stored.get(key) != new.get(key) for key in STATE_ANNOTATIONS if key in new)


def compute_info_codes(annotations: Mapping[str, str | None]) -> tuple[str | None, str | None]:
    """The part of the informational annotations whose change is worth showing: the reason's
    code (its message changes with every forecast) and the model. The forecast's numbers and
    the timestamp change every cycle and are not compared."""
    reason = annotations.get(ANNOTATION_REASON)
    code = reason.split(":", 1)[0].strip() if reason is not None else None
    return code, annotations.get(ANNOTATION_MODEL)


def decide_info_refresh(
    stored: Mapping[str, str],
    new: Mapping[str, str | None],
    stale_since: datetime | None,
    now: datetime,
    refresh_seconds: float = INFO_REFRESH_SECONDS,
) -> tuple[bool, datetime | None]:
    """Whether to write the informational annotations on their own now, and the new
    ``stale_since`` (the first cycle of the current unbroken run of cycles whose codes differed
    from the stored ones; ``None`` while they agree). The caller keeps ``stale_since`` between
    cycles and resets it to ``None`` after any write."""
    if compute_info_codes(stored) == compute_info_codes(new):
        return False, None
    since = stale_since or now
    return (now - since).total_seconds() >= refresh_seconds, since
