"""The window-peak bound: what the decision takes as the capacity a window needs.

Its calibration must be causal, must use the level asked for, must be what the decision
reads, and must cover the realised peak as often as it claims on noise whose answer is known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import fit_model, make_model
from models.auto import Auto
from models.base import Model, calibration_points
from models.calibration import pinball
from models.series import naive_scale
from predictive_scaler.backtest import _forecast_uppers
from predictive_scaler.forecasting import ForecastSettings, TargetForecaster
from predictive_scaler.signal_buffer import PendingForecast, SignalBuffer

STEP = 300.0
H = 10


def noise(n: int, seed: int = 7, sd: float = 5.0) -> np.ndarray:
    return 50 + np.random.default_rng(seed).normal(0, sd, n)


def fitted(name: str, y: np.ndarray, horizon: int = H) -> Model:
    model = make_model(name, horizon=horizon)
    assert isinstance(model, Model)
    return model.fit(y, STEP)


def test_walk_forward_never_sees_a_point_before_forecasting_from_it() -> None:
    y = noise(1200)
    tail_start = len(y) - calibration_points(len(y), H, STEP)
    j = 150  # a point of the walk forward, by its index in the held-out tail
    changed = y.copy()
    changed[tail_start + j] += 500.0
    base, moved = fitted("ses", y), fitted("ses", changed)
    a, b = base.calibration_, moved.calibration_
    assert a is not None and b is not None and a.peak is not None and b.peak is not None
    assert a.forecasts.shape[0] == len(y) - tail_start, "one origin per point (stride 1)"
    # Origins up to j forecast before the point at j is absorbed: their forecasts, and the
    # window peaks forecast from them, cannot depend on it.
    np.testing.assert_array_equal(a.forecasts[: j + 1], b.forecasts[: j + 1])
    np.testing.assert_array_equal(a.peak.forecast_peaks[: j + 1], b.peak.forecast_peaks[: j + 1])
    assert not np.array_equal(a.forecasts[j + 1], b.forecasts[j + 1]), "then it is absorbed"
    # The realised peak of origin i is the max of the points i .. i + H - 1 after it.
    np.testing.assert_array_equal(
        a.peak.actual_peaks[: j - H + 1], b.peak.actual_peaks[: j - H + 1]
    )
    assert (b.peak.actual_peaks[j - H + 1 : j + 1, -1] == changed[tail_start + j]).all()
    np.testing.assert_array_equal(
        a.peak.actual_peaks[j + 1 :], b.peak.actual_peaks[j + 1 :], "later windows start after j"
    )


def test_the_bound_uses_the_requested_quantile_level() -> None:
    model = fitted("persistence", noise(3000))
    peak = model.calibration_.peak if model.calibration_ is not None else None
    assert peak is not None
    forecast = model.predict(H, (0.8, 0.9))
    mean_peak = float(np.max(forecast.mean))
    scale = peak.scale(mean_peak, model.volatility_)
    for level in (0.8, 0.9):
        expected = mean_peak + float(np.quantile(peak.z[H - 1], level)) * scale
        assert forecast.peak(level) == pytest.approx(expected, rel=1e-12)
    assert forecast.peak(0.8) < forecast.peak(0.9)
    # On the walk forward each level covers its own share of the realised peaks.
    for level in (0.8, 0.9):
        realised, _, bound = peak.errors(H, level)
        assert np.mean(realised <= bound) == pytest.approx(level, abs=0.01)


def test_the_decision_takes_the_window_peak_bound() -> None:
    y = noise(4000)
    settings = ForecastSettings(step_seconds=STEP, horizon_seconds=H * STEP, model="ses")
    forecaster = TargetForecaster(settings)
    forecaster.refit(y)
    window = forecaster.forecast()
    model = forecaster.model
    assert model is not None
    path_max = float(np.max(model.predict(H, (0.9,)).quantile(0.9)))
    # On independent noise the peak of 10 steps is well above each step's p90.
    assert window.upper_max > path_max + 2.0, "the bound, not the max of per-step p90s"
    assert window.upper_max == pytest.approx(model.predict(H, (0.9,)).peak(0.9), rel=1e-12)
    # The backtest decides on the same bound, for every quantile it sweeps.
    assert _forecast_uppers(forecaster, (0.9,)) == {0.9: pytest.approx(window.upper_max)}
    # (The backtest fits uncompacted, so that it can sweep the quantile.)
    forecaster.adopt(fit_model("ses", y, STEP, H))
    uppers = _forecast_uppers(forecaster, (0.8, 0.9))
    assert uppers[0.8] is not None and uppers[0.8] < window.upper_max


def test_the_bound_covers_the_peak_of_known_noise_out_of_sample() -> None:
    # Independent N(50, 5) at 1-minute steps, refitted every 1,500 points on the last 12,000
    # (one calibration's quantile is itself an estimate: coverage is judged over several).
    y = noise(18_000, seed=3)
    hits, offsets = [], []
    model = None
    for i in range(12_000, len(y) - H):
        if (i - 12_000) % 1_500 == 0:
            model = make_model("ses", horizon=H).fit(y[i - 12_000 : i], 60.0)
        assert model is not None
        forecast = model.predict(H, (0.9,))
        hits.append(y[i : i + H].max() <= forecast.peak(0.9))
        offsets.append(forecast.peak(0.9) - float(np.max(forecast.mean)))
        model.update(y[i : i + 1])
    assert 0.87 <= np.mean(hits) <= 0.93
    # The p90 of the max of 10 independent N(0, 5) is 5 * z(0.9 ** 0.1) = 11.5 (plus the
    # level's own estimation error); the max of per-step p90s would be about 6.4.
    assert 10.5 <= np.median(offsets) <= 12.5


def test_auto_scores_candidates_on_the_window_peak() -> None:
    y = noise(3000)
    model = make_model("auto", horizon=H)
    assert isinstance(model, Auto)
    model.fit(y, STEP)
    scale = naive_scale(y)
    raw = {}
    for name, candidate in model.models_.items():
        assert candidate.calibration_ is not None and candidate.calibration_.peak is not None
        realised, forecast, bound = candidate.calibration_.peak.errors(H, 0.9)
        raw[name] = (
            float(np.abs(realised - forecast).mean()) / scale,
            float(pinball(realised, bound, 0.9).mean()) / scale,
        )
    best_mase = min(v[0] for v in raw.values())
    best_loss = min(v[1] for v in raw.values())
    for name, (peak_mase, peak_loss) in raw.items():
        score = model.scores_[name]
        assert score.peak_mase == pytest.approx(peak_mase)
        assert score.peak_pinball == pytest.approx(peak_loss)
        assert score.score == pytest.approx((peak_mase / best_mase + peak_loss / best_loss) / 2)


def test_auto_shows_the_per_step_figures_at_the_horizon_not_at_step_one() -> None:
    # The displayed MASE and pinball are those of the warm-up horizon's step (H), where the
    # capacity must be ready; step 1 is always the easiest and would flatter every model.
    y = noise(3000)
    model = make_model("auto", horizon=H)
    assert isinstance(model, Auto)
    model.fit(y, STEP)
    scale = naive_scale(y)
    for name, candidate in model.models_.items():
        assert candidate.calibration_ is not None
        actual, forecast, upper = candidate.calibration_.errors_at(H, 0.9)
        score = model.scores_[name]
        assert score.mase == pytest.approx(float(np.abs(actual - forecast).mean()) / scale), name
        assert score.pinball == pytest.approx(float(pinball(actual, upper, 0.9).mean()) / scale)


def test_auto_describes_its_choice_and_every_score_ranked() -> None:
    # What `backtest --json` and the fit log show: the chosen model, each candidate's four
    # figures and score rounded to 4 places, best first, and why any candidate was skipped.
    y = noise(3000)
    model = make_model("auto", horizon=H)
    assert isinstance(model, Auto)
    model.fit(y, STEP)
    model.skipped_["mstl"] = "needs 2 days"
    info = model.describe()
    chosen = model.chosen.name
    assert info["model"] == f"auto:{chosen}"
    assert info["chosen"] == chosen
    ranked = sorted(model.scores_.values(), key=lambda s: s.score)
    assert list(info["scores"]) == [s.name for s in ranked]
    for s in ranked:
        assert info["scores"][s.name] == {
            "mase": round(s.mase, 4),
            "pinball": round(s.pinball, 4),
            "peak_mase": round(s.peak_mase, 4),
            "peak_pinball": round(s.peak_pinball, 4),
            "score": round(s.score, 4),
        }
    assert info["skipped"] == {"mstl": "needs 2 days"}
    assert {k: v for k, v in model.chosen.describe().items() if k != "model"} == {
        k: v for k, v in info.items() if k not in {"model", "chosen", "scores", "skipped"}
    }


def test_the_live_loop_scores_the_window_peak_against_its_bound_as_forecasts_come_due() -> None:
    state = SignalBuffer(capacity=100, step=60.0)  # a signal's buffer, as the live loop keeps
    state.append(0.0, np.array([1.0, 1.0]))  # points at 0 s and 60 s
    # From the point at 60 s, windows of 120 .. 240 s: the per-step forecast at 240 s is
    # met (1.0 <= 1.5) while the window's peak, 3.0 at 180 s, is over the first bound only.
    state.pending.append(PendingForecast(240.0, 1.0, 1.5, 120.0, 2.0))
    state.pending.append(PendingForecast(240.0, 1.0, 1.5, 120.0, 3.0))
    state.pending.append(PendingForecast(300.0, 1.0, 1.5, 180.0, 9.0))  # not due yet
    state.append(120.0, np.array([1.0, 3.0, 1.0]))
    state.settle()
    assert list(state.covered) == [True, True]
    assert list(state.peak_covered) == [False, True], "the realised peak, not the last step"
    assert len(state.pending) == 1
    # A window with an unobserved step is not scored.
    state.append(300.0, np.array([math.nan]))
    state.settle()
    assert list(state.peak_covered) == [False, True] and not state.pending
