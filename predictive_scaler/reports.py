"""What one cycle of one target found, decided and did: the values the loop hands to the
dispatcher, ``/metrics``, the External Metrics API and the ``recommend`` command.

PURE: frozen data, no I/O, no event loop, no logger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["CycleReport", "SignalReport"]


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
