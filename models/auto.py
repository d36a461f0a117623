"""``auto``: pick the model per target by its out-of-sample errors on what the decision uses.

Every candidate fits on the older part of the history and walks forward through the
recent part (see ``models.base``). The decision takes the upper bound of the window's peak
(the maximum over the horizon's steps, ``models.calibration.PeakCalibration``), so that is
what is scored: the MASE of the forecast peak against the realised peak, and the pinball
loss of the peak bound at the upper quantile. A flat model can score well at the last step
while it misses the peak inside the window; this score sees that. The per-step figures at
the horizon are kept for display. The candidate with the lowest mean of the two peak
figures, each relative to the best, wins; candidates within ``tie_tolerance`` (8 %) of the
winner count as tied and the cheapest of them is chosen. The recent window holds a day or two of
errors, so small differences in it are noise: the margin keeps ``auto`` on a baseline
unless a richer model is clearly better, which is what keeps it from losing to them. All
candidates keep absorbing observations, so their scores can be shown and the next refit
starts from warm state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from models.base import DEFAULT_QUANTILES, FloatArray, Forecast, Model
from models.calibration import pinball
from models.errors import InsufficientHistory
from models.series import as_series, naive_scale


@dataclass(frozen=True)
class CandidateScore:
    """How one candidate did on the recent history: over the window (scored) and at the
    horizon step (shown)."""

    name: str
    mase: float
    """MASE of the point forecast at the horizon step."""
    pinball: float
    """Pinball loss of the upper quantile at the horizon step."""
    score: float
    """Mean of peak MASE and peak pinball, each divided by the best candidate's."""
    cost: int
    peak_mase: float = float("nan")
    """MASE of the forecast window peak (max of the mean path) against the realised peak."""
    peak_pinball: float = float("nan")
    """Pinball loss of the window-peak bound against the realised peak."""


class Auto:
    """Choose among candidate models by rolling-origin errors on recent history."""

    name = "auto"
    cost = 10

    def __init__(
        self,
        candidates: Sequence[Callable[[], Model]],
        horizon: int = 15,
        level: float = 0.9,
        tie_tolerance: float = 0.08,
    ) -> None:
        if not candidates:
            raise ValueError("auto needs at least one candidate model")
        self.candidates = list(candidates)
        self.horizon = horizon
        self.level = level
        self.tie_tolerance = tie_tolerance
        self.models_: dict[str, Model] = {}
        self.scores_: dict[str, CandidateScore] = {}
        self.skipped_: dict[str, str] = {}
        self.chosen_: Model | None = None
        self.fit_seconds_: dict[str, float] = {}

    def fit(self, y: FloatArray, step_seconds: float) -> Self:
        series = as_series(y)
        scale = naive_scale(series)
        self.models_, self.skipped_, self.fit_seconds_ = {}, {}, {}
        raw: dict[str, tuple[float, float, float, float, int]] = {}
        for make in self.candidates:
            model = make()
            started = time.perf_counter()
            try:
                model.fit(series, step_seconds)
            except InsufficientHistory as exc:
                self.skipped_[model.name] = str(exc)
                continue
            finally:
                self.fit_seconds_[model.name] = time.perf_counter() - started
            calibration = model.calibration_
            assert calibration is not None
            actual, forecast, upper = calibration.errors_at(self.horizon, self.level)
            if actual.size == 0:
                self.skipped_[model.name] = "no out-of-sample errors at the horizon"
                continue
            peak, peak_forecast, bound = calibration.peak.errors(self.horizon, self.level)
            if peak.size == 0:
                self.skipped_[model.name] = "no out-of-sample window peaks"
                continue
            mase = float(np.abs(actual - forecast).mean()) / scale
            loss = float(pinball(actual, upper, self.level).mean()) / scale
            peak_mase = float(np.abs(peak - peak_forecast).mean()) / scale
            peak_loss = float(pinball(peak, bound, self.level).mean()) / scale
            self.models_[model.name] = model
            raw[model.name] = (mase, loss, peak_mase, peak_loss, model.cost)
        if not raw:
            reasons = "; ".join(self.skipped_.values())
            raise InsufficientHistory(f"auto: no candidate could fit ({reasons})")
        best_mase = max(min(v[2] for v in raw.values()), 1e-12)
        best_loss = max(min(v[3] for v in raw.values()), 1e-12)
        self.scores_ = {
            name: CandidateScore(name, m, p, (pm / best_mase + pp / best_loss) / 2, cost, pm, pp)
            for name, (m, p, pm, pp, cost) in raw.items()
        }
        top = min(s.score for s in self.scores_.values())
        tied = [s for s in self.scores_.values() if s.score <= top * (1 + self.tie_tolerance)]
        winner = min(tied, key=lambda s: (s.cost, s.score))
        self.chosen_ = self.models_[winner.name]
        return self

    @property
    def chosen(self) -> Model:
        if self.chosen_ is None:
            raise RuntimeError("auto: fit() must be called first")
        return self.chosen_

    def update(self, y_new: FloatArray) -> Self:
        self.chosen  # noqa: B018 - raises when unfitted
        for model in self.models_.values():
            model.update(y_new)
        return self

    def predict(self, horizon: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Forecast:
        return self.chosen.predict(horizon, quantiles)

    def describe(self) -> dict[str, Any]:
        info = self.chosen.describe()
        info["model"] = f"auto:{self.chosen.name}"
        info["chosen"] = self.chosen.name
        ranked = sorted(self.scores_.values(), key=lambda s: s.score)
        info["scores"] = {
            s.name: {
                "mase": round(s.mase, 4),
                "pinball": round(s.pinball, 4),
                "peak_mase": round(s.peak_mase, 4),
                "peak_pinball": round(s.peak_pinball, 4),
                "score": round(s.score, 4),
            }
            for s in ranked
        }
        if self.skipped_:
            info["skipped"] = dict(self.skipped_)
        return info
