"""One target's model over time: refit on a schedule, absorb new points in between.

Shared by the backtest and the live loop, so both forecast the same way. Fitting is the
expensive part; callers run ``refit`` off the event loop. No I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import numpy as np
import numpy.typing as npt

from models import FitResult, Forecaster, fit_model
from models.auto import Auto
from models.base import Calibration, Model
from models.series import from_first_observed
from predictive_scaler.config import Policy
from predictive_scaler.decision import compute_history_floor

FloatArray = npt.NDArray[np.float64]

_DEFAULT_POLICY: Final = Policy()


@dataclass(frozen=True)
class ForecastSettings:
    """How a target is forecast. The policy's knobs default to the policy's own defaults (its
    field table); ``policy_settings.forecast_settings`` builds them from a target's policy."""

    step_seconds: float
    horizon_seconds: float
    """Warm-up plus one cycle: capacity must cover the whole window."""
    model: str = _DEFAULT_POLICY.model
    quantile: float = _DEFAULT_POLICY.quantile
    floor_quantile: float = _DEFAULT_POLICY.floor_quantile
    """History floor (``decision.compute_history_floor``) learned at each fit; 0 is off."""
    seasons: tuple[str, ...] = _DEFAULT_POLICY.seasons
    history_seconds: float = _DEFAULT_POLICY.history_seconds
    refit_interval_seconds: float = _DEFAULT_POLICY.refit_interval_seconds
    max_age_seconds: float = 0.0
    """How old the newest point may be when forecasting (the live loop's ``staleAfter``): a
    fit keeps its quantiles far enough out to cover the horizon from a point that old. 0, a
    fresh point, is not a policy default but the simulator's case: it forecasts from the step
    it has just seen."""

    @property
    def horizon_steps(self) -> int:
        """The horizon in whole steps, rounded up: a window short of it misses the ramp."""
        return steps_covering(self.horizon_seconds, self.step_seconds)

    @property
    def kept_steps(self) -> int:
        """Steps of quantile path a compacted fit keeps: the horizon from the oldest newest
        point a fresh signal may have."""
        return max(
            self.horizon_steps, self.steps_to_cover(self.max_age_seconds + self.step_seconds)
        )

    def steps_to_cover(self, age_seconds: float) -> int:
        """Steps from a newest point ``age_seconds`` old to ``now + horizon``:
        ``ceil((horizon + age) / step)``."""
        return steps_covering(self.horizon_seconds + max(age_seconds, 0.0), self.step_seconds)

    @property
    def history_points(self) -> int:
        return steps_for(self.history_seconds, self.step_seconds)

    @property
    def refit_points(self) -> int:
        return steps_for(self.refit_interval_seconds, self.step_seconds)


def steps_for(duration_seconds: float, step_seconds: float) -> int:
    """A duration in steps: rounded, at least one."""
    return max(1, round(duration_seconds / step_seconds))


def steps_covering(duration_seconds: float, step_seconds: float) -> int:
    """The fewest whole steps that span ``duration_seconds`` (at least one)."""
    return max(1, math.ceil(duration_seconds / step_seconds - 1e-9))


@dataclass(frozen=True)
class WindowForecast:
    """The forecast the decision uses, and what the user sees."""

    mean_at_horizon: float
    upper_at_horizon: float
    upper_max: float
    """Calibrated upper bound (at the quantile) of the window's peak: capacity the whole
    window needs, what the decision uses (``models.calibration.PeakCalibration``)."""
    model: str
    horizon_seconds: float
    floor: float | None = None
    """The history floor learned at the last fit (``ForecastSettings.floor_quantile``); the
    decision takes the larger of it and ``upper_max``. None: off or not learned."""


@dataclass(frozen=True)
class BacktestSummary:
    """The fitted model's out-of-sample walk forward, at the horizon: mean absolute error,
    coverage of the upper quantile, and how many origins they cover; and over the window:
    coverage of the realised peak by the window-peak bound."""

    abs_error: float | None = None
    coverage: float | None = None
    count: int = 0
    peak_coverage: float | None = None
    peak_count: int = 0


@dataclass(frozen=True)
class _CompactCalibration(Calibration):
    """A calibration reduced to the one quantile path the controller forecasts with.

    The full one keeps every origin's forecast, actual and normalised error (about 2.4 MB per
    model on 7 days of 1-minute data); this keeps the normalised quantiles for one
    ``(level, horizon)`` (precomputed into the cache ``offsets`` reads) and the backtest
    summary. ``forecasts`` keeps its first dimension (the origin count ``describe`` shows)
    with no columns. Any other level or horizon raises instead of guessing.
    """

    summary: BacktestSummary = field(default_factory=BacktestSummary, compare=False)

    def _normalised_quantiles(self, horizon: int, level: float) -> FloatArray:
        # A path is per step and does not depend on how far it is asked for: a shorter
        # horizon is its prefix.
        for (kept_level, kept), path in self._cache.items():
            if kept_level == level and kept >= horizon:
                return path[:horizon].copy()
        raise RuntimeError(
            f"compacted calibration keeps only {sorted(self._cache)}; asked for "
            f"level {level} over {horizon} steps"
        )


def compute_backtest_summary(
    model: Forecaster | None, horizon_steps: int, quantile: float
) -> BacktestSummary:
    """MAE and upper-quantile coverage at the horizon of the fitted model's own out-of-sample
    walk forward (``models.base.Calibration``); empty when the model keeps none."""
    chosen = getattr(model, "chosen_", None) or model
    calibration = getattr(chosen, "calibration_", None)
    if isinstance(calibration, _CompactCalibration):
        return calibration.summary
    if calibration is None:
        return BacktestSummary()
    actual, mean, upper = calibration.errors_at(horizon_steps, quantile)
    if not actual.size:
        return BacktestSummary()
    peak, _, bound = calibration.peak.errors(horizon_steps, quantile)
    return BacktestSummary(
        float(np.mean(np.abs(actual - mean))),
        float(np.mean(actual <= upper)),
        int(actual.size),
        float(np.mean(peak <= bound)) if peak.size else None,
        int(peak.size),
    )


def compact_fit(
    result: FitResult, horizon_steps: int, quantile: float, kept_steps: int | None = None
) -> FitResult:
    """Shrink a fresh fit to what forecasting up to ``kept_steps`` (default
    ``horizon_steps``) at ``quantile`` needs; the backtest summary is at ``horizon_steps``.

    ``auto`` keeps only its chosen candidate (the others only fed its scores, which stay);
    the chosen model's calibration keeps one precomputed quantile path and the backtest
    summary. Forecasts are unchanged, bit for bit; a fitted ``auto`` on 7 days of 1-minute
    data goes from about 17 MB to about 20 kB, which is what makes a thousand targets fit in
    memory and cheap to send back from a worker process. Mutates and returns ``result``.
    """
    kept = max(horizon_steps, kept_steps or 0)
    model = result.model
    chosen: object = model
    if isinstance(model, Auto) and model.chosen_ is not None:
        model.models_ = {model.chosen_.name: model.chosen_}
        chosen = model.chosen_
    if isinstance(chosen, Model) and chosen.calibration_ is not None:
        full = chosen.calibration_
        if not isinstance(full, _CompactCalibration):
            summary = compute_backtest_summary(chosen, horizon_steps, quantile)
            path = full._normalised_quantiles(kept, quantile)
            origins = int(full.forecasts.shape[0])
            chosen.calibration_ = _CompactCalibration(
                forecasts=np.empty((origins, 0)),
                actuals=np.empty((origins, 0)),
                volatility=np.empty(0),
                power=full.power,
                floor=full.floor,
                z=(),
                peak=full.peak.compact(quantile, kept),
                _cache={(quantile, kept): path},
                summary=summary,
            )
    return result


def fit_compact(
    name: str,
    y: FloatArray,
    step_seconds: float,
    horizon_steps: int,
    seasons: Sequence[str],
    quantile: float,
    kept_steps: int | None = None,
) -> FitResult:
    """``models.fit_model`` then :func:`compact_fit`: what the live loop fits with.

    A module-level function of plain arguments, so a process pool can pickle it (spawn-safe).
    """
    result = fit_model(name, y, step_seconds, horizon_steps, seasons, quantile)
    return compact_fit(result, horizon_steps, quantile, kept_steps)


def refit_offset(key: str, refit_points: int) -> int:
    """A stable stagger in ``[0, refit_points)`` for ``key`` (blake2b, not ``hash()``).

    Counting the first fit as ``offset`` points old makes the second refit of each target
    come ``refit_points - offset`` points later, so targets fitted together at start-up spread
    their later refits evenly over the refit interval instead of all refitting in one cycle.
    The staleness bound holds: no model gets older than the refit interval.
    """
    if refit_points <= 1:
        return 0
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % refit_points


class TargetForecaster:
    """A fitted model plus the bookkeeping of when it was fitted."""

    def __init__(self, settings: ForecastSettings) -> None:
        self.settings = settings
        self.fit_: FitResult | None = None
        self.points_since_fit = 0
        self.backtest_ = BacktestSummary()
        """The current fit's backtest summary (computed once per fit)."""
        self._model_name: str | None = None
        self.floor_: float | None = None
        """The history floor of the window the current fit was made on."""

    @property
    def model(self) -> Forecaster | None:
        return self.fit_.model if self.fit_ is not None else None

    def needs_refit(self) -> bool:
        return self.fit_ is None or self.points_since_fit >= self.settings.refit_points

    def fit_job(self, history: FloatArray, *, model: str | None = None) -> Callable[[], FitResult]:
        """The fit of the latest ``history_seconds`` of ``history``, as a picklable call to
        run anywhere (this thread, a worker thread or process); raises InsufficientHistory
        when run. The backtest and the live loop both fit through this. ``model`` fits
        another model than the settings' (a stand-in while the configured one is fitted)."""
        s = self.settings
        # The window starts at the first sample: a fresh install has no gap before it.
        window = from_first_observed(np.array(history, dtype=np.float64)[-s.history_points :])
        return partial(
            fit_compact,
            model or s.model,
            window,
            s.step_seconds,
            s.horizon_steps,
            s.seasons,
            s.quantile,
            s.kept_steps,
        )

    def refit(self, history: FloatArray) -> FitResult:
        """Fit here and now (the backtest's way); raises InsufficientHistory."""
        result = self.fit_job(history)()
        self.adopt(result, history=history)
        return result

    def adopt(
        self, result: FitResult, *, age_points: int = 0, history: FloatArray | None = None
    ) -> None:
        """Take a fit made elsewhere (a worker thread or process); ``age_points`` counts it
        as that many points old already (see :func:`refit_offset`). ``history`` is the
        window it was fitted on, from which the history floor is learned (None: no floor)."""
        s = self.settings
        self.fit_ = result
        self.floor_ = (
            compute_history_floor(history[-s.history_points :], s.floor_quantile)
            if history is not None
            else None
        )
        self.points_since_fit = age_points
        self._model_name = None
        self.backtest_ = compute_backtest_summary(result.model, s.horizon_steps, s.quantile)

    def observe(self, values: FloatArray | Sequence[float]) -> None:
        """Absorb points that follow the history; NaN marks a missing point."""
        arr = np.asarray(values, dtype=np.float64)
        if self.fit_ is not None and arr.size:
            self.fit_.model.update(arr)
        self.points_since_fit += int(arr.size)

    def forecast(self, age_seconds: float = 0.0) -> WindowForecast:
        """The window from the newest point the model has seen, ``age_seconds`` before now,
        to ``now + horizon``: ``ceil((horizon + age) / step)`` steps (no further than a fit
        keeps; past ``max_age_seconds`` the data is stale anyway)."""
        if self.fit_ is None:
            raise RuntimeError("no model fitted yet")
        s = self.settings
        steps = min(s.steps_to_cover(age_seconds), s.kept_steps)
        forecast = self.fit_.model.predict(steps, (s.quantile,))
        upper = forecast.quantile(s.quantile)
        # The decision needs the window's peak: its own calibrated bound, not the maximum of
        # the per-step quantiles (which covers the peak far less often than it claims).
        peak = forecast.peak(s.quantile)
        if not math.isfinite(peak):
            raise ValueError("model produced a non-finite forecast")
        return WindowForecast(
            mean_at_horizon=float(forecast.mean[-1]),
            upper_at_horizon=float(upper[-1]),
            upper_max=peak,
            model=self._describe_model(),
            horizon_seconds=steps * s.step_seconds,
            floor=self.floor_,
        )

    def _describe_model(self) -> str:
        # describe() of `auto` builds its whole score table (a few hundred microseconds);
        # the name only changes with the fit.
        if self._model_name is None:
            assert self.fit_ is not None
            self._model_name = str(self.fit_.model.describe()["model"])
        return self._model_name
