"""Rolling-origin evaluation of models on one series, at one horizon.

From every origin in the evaluation window each model forecasts ``horizon`` steps ahead
using only the data up to that origin; the forecast for the last step is compared with
what happened (per-step figures), and so is its window-peak bound with the highest value
of the window's steps (window-peak figures: what the decision uses). Models are refitted
every ``refit_points`` on the latest ``history_points`` and absorb each new point in
between, exactly as the live loop does.
All single models are the candidates ``auto`` fitted, so one fit serves both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.auto import Auto
from models.base import FloatArray, Forecaster
from models.calibration import pinball
from models.errors import InsufficientHistory
from models.registry import fit_model, make_model
from models.series import as_series, naive_scale

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelScore:
    """Out-of-sample accuracy of one model at the horizon, over the evaluation window."""

    name: str
    mase: float
    """Mean absolute error over the in-sample one-step naive MAE (scale-free)."""
    pinball: float
    """Pinball loss of the upper quantile, over the same scale."""
    coverage: float
    """Share of actuals at or below the upper quantile."""
    peak_mase: float
    """Mean absolute error of the forecast window peak (max of the mean path over steps
    1..horizon) against the realised peak, over the same scale."""
    peak_pinball: float
    """Pinball loss of the window-peak bound against the realised peak, over the scale."""
    peak_coverage: float
    """Share of realised window peaks at or below the window-peak bound."""
    path_peak_coverage: float
    """Share of realised window peaks at or below the maximum of the per-step upper path
    (what the decision used before the window-peak bound)."""
    fit_seconds: float
    """Mean wall time of one fit."""
    forecast_ms: float
    """Mean wall time of one forecast from fitted state, in milliseconds."""
    origins: int
    chosen: dict[str, int] | None = None
    """For auto: how often each candidate was chosen, by refit."""


def evaluate(
    y: FloatArray,
    step_seconds: float,
    horizon: int,
    names: Sequence[str],
    *,
    level: float = 0.9,
    history_points: int,
    refit_points: int,
    eval_start: int,
    seasons: Sequence[str] = ("daily", "weekly"),
    progress: Progress | None = None,
) -> dict[str, ModelScore]:
    """Scores per model name (``auto`` and any single model) over ``[eval_start, n - h)``."""
    series = as_series(y)
    n = len(series)
    if not 0 < eval_start < n - horizon:
        raise InsufficientHistory(
            f"evaluation needs points after {eval_start} and {horizon} more; series has {n}"
        )
    scale = naive_scale(series[:eval_start])
    origins = np.arange(eval_start - 1, n - horizon)
    means = {name: np.empty(len(origins)) for name in names}
    uppers = {name: np.empty(len(origins)) for name in names}
    peak_means = {name: np.empty(len(origins)) for name in names}
    peak_bounds = {name: np.empty(len(origins)) for name in names}
    path_peaks = {name: np.empty(len(origins)) for name in names}
    fit_time = {name: 0.0 for name in names}
    forecast_time = {name: 0.0 for name in names}
    fits = 0
    chosen: dict[str, int] = {}
    models: dict[str, Forecaster] = {}
    for i, origin in enumerate(origins):
        if i % refit_points == 0:
            window = series[max(0, origin + 1 - history_points) : origin + 1]
            models = _fit_all(window, step_seconds, horizon, names, level, seasons, fit_time)
            fits += 1
            if isinstance(models.get("auto"), Auto):
                picked = models["auto"].describe()["chosen"]
                chosen[picked] = chosen.get(picked, 0) + 1
        for name in names:
            started = time.perf_counter()
            forecast = models[name].predict(horizon, (level,))
            forecast_time[name] += time.perf_counter() - started
            upper = forecast.quantile(level)
            means[name][i] = forecast.mean[horizon - 1]
            uppers[name][i] = upper[horizon - 1]
            peak_means[name][i] = float(np.max(forecast.mean))
            peak_bounds[name][i] = forecast.peak(level)
            path_peaks[name][i] = float(np.max(upper))
        for model in _distinct(models.values()):
            model.update(series[origin + 1 : origin + 2])
        if progress is not None:
            progress(i + 1, len(origins))
    actual = series[origins + horizon]
    known = np.isfinite(actual)
    # The realised peak of each window: the steps after the origin, up to the horizon.
    windows = np.lib.stride_tricks.sliding_window_view(series[eval_start:], horizon)
    realised = windows[: len(origins)].max(axis=1)  # NaN when a step of it is missing
    peak_known = np.isfinite(realised)
    scores = {}
    for name in names:
        m, u, a = means[name][known], uppers[name][known], actual[known]
        rp, pm = realised[peak_known], peak_means[name][peak_known]
        pb, pp = peak_bounds[name][peak_known], path_peaks[name][peak_known]
        scores[name] = ModelScore(
            name=name,
            mase=float(np.abs(a - m).mean() / scale),
            pinball=float(pinball(a, u, level).mean() / scale),
            coverage=float((a <= u).mean()),
            peak_mase=float(np.abs(rp - pm).mean() / scale),
            peak_pinball=float(pinball(rp, pb, level).mean() / scale),
            peak_coverage=float((rp <= pb).mean()),
            path_peak_coverage=float((rp <= pp).mean()),
            fit_seconds=fit_time[name] / fits,
            forecast_ms=1000 * forecast_time[name] / len(origins),
            origins=int(known.sum()),
            chosen=dict(chosen) if name == "auto" else None,
        )
    return scores


def _fit_all(
    window: FloatArray,
    step_seconds: float,
    horizon: int,
    names: Sequence[str],
    level: float,
    seasons: Sequence[str],
    fit_time: dict[str, float],
) -> dict[str, Forecaster]:
    models: dict[str, Forecaster] = {}
    auto: Auto | None = None
    if "auto" in names:
        started = time.perf_counter()
        candidate = make_model("auto", horizon, seasons, level)
        assert isinstance(candidate, Auto)
        try:
            auto = candidate.fit(window, step_seconds)
            models["auto"] = auto
        except InsufficientHistory:
            models["auto"] = fit_model("auto", window, step_seconds, horizon, seasons, level).model
        fit_time["auto"] += time.perf_counter() - started
    for name in names:
        if name == "auto":
            continue
        if auto is not None and name in auto.models_:
            models[name] = auto.models_[name]
            fit_time[name] += auto.fit_seconds_[name]
            continue
        started = time.perf_counter()
        models[name] = fit_model(name, window, step_seconds, horizon, seasons, level).model
        fit_time[name] += time.perf_counter() - started
    return models


def _distinct(models: Iterable[Forecaster]) -> list[Forecaster]:
    """Each model once: auto already updates the candidates it holds."""
    pool = list(models)
    held = {id(m) for model in pool if isinstance(model, Auto) for m in model.models_.values()}
    seen: set[int] = set()
    out = []
    for model in pool:
        if id(model) in held or id(model) in seen:
            continue
        seen.add(id(model))
        out.append(model)
    return out
