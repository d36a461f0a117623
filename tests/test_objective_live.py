"""Headroom from an objective in the live loop (issue 13 item 4): at each refit the fitter
asks the chooser, fits at the quantile it picked and forecasts with it; recommend and the
HPA's annotation show the choice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from models import FitResult
from predictive_scaler.backtest import SimulationSettings
from predictive_scaler.forecasting import ForecastSettings, TargetForecaster
from predictive_scaler.logs import get_logger
from predictive_scaler.objective import HeadroomChoice, Objective, choose_headroom
from predictive_scaler.recommend import format_table, report_to_json
from predictive_scaler.signal_fitter import SignalFitter
from predictive_scaler.values import CycleReport, SignalReport

STEP = 600.0
DAY = 144


def _history(days: int = 4) -> np.ndarray:
    t = np.arange(days * DAY, dtype=np.float64)
    rng = np.random.default_rng(7)
    return np.maximum(4.0 + 3.0 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 0.8, t.size), 0)


SETTINGS = ForecastSettings(
    step_seconds=STEP,
    horizon_seconds=1230.0,
    model="seasonal_naive",
    seasons=("daily",),
    history_seconds=7 * 86_400.0,
    refit_interval_seconds=21_600.0,
)
SCENARIO = SimulationSettings(
    target=0.7,
    min_replicas=1,
    max_replicas=40,
    warmup_seconds=600,
    cycle_seconds=630,
    model="seasonal_naive",
    seasons=("daily",),
)


async def _in_thread(fit: Callable[[], FitResult]) -> FitResult:
    return await asyncio.to_thread(fit)


def _fitter() -> SignalFitter:
    return SignalFitter(
        TargetForecaster(SETTINGS),
        _in_thread,
        key="ns/llm/kv",
        log=get_logger(target="ns/llm"),
        signal="kv",
    )


async def test_a_target_with_an_objective_forecasts_at_the_quantile_the_chooser_picks() -> None:
    history = _history()
    objective = Objective(shortfall_price=0.5)
    expected = choose_headroom(history, STEP, SCENARIO, objective)
    assert expected.quantile is not None and expected.quantile != SETTINGS.quantile
    fitter = _fitter()
    fitter.set_objective(objective, SCENARIO)
    problem = await asyncio.wait_for(fitter.step(lambda: history, history[-1:]), 120)
    assert problem is None
    assert fitter.choice == expected
    assert fitter.forecaster.settings.quantile == expected.quantile
    # The forecast is the chosen quantile's: the same as a fit made at that quantile.
    plain = TargetForecaster(
        ForecastSettings(**{**SETTINGS.__dict__, "quantile": expected.quantile})
    )
    plain.refit(history)
    assert fitter.forecaster.forecast().upper_max == plain.forecast().upper_max


async def test_without_an_objective_the_policy_quantile_decides() -> None:
    history = _history()
    fitter = _fitter()
    await asyncio.wait_for(fitter.step(lambda: history, history[-1:]), 60)
    assert fitter.choice is None
    assert fitter.forecaster.settings.quantile == SETTINGS.quantile


def _report(choice: HeadroomChoice | None) -> CycleReport:
    signal = SignalReport(
        "kv_cache",
        None,
        1230.0,
        0.6 if choice else 0.9,
        mean=3.0,
        upper_max=5.0,
        target_per_pod=0.7,
        needed=8,
        model="seasonal_naive",
        objective=choice.report() if choice else None,
    )
    return CycleReport(
        "ns/llm", "ns", "llm", datetime(2026, 1, 1, tzinfo=UTC), (signal,), 2, 40, 3, 1, 8
    )


CHOICE = HeadroomChoice(
    0.6,
    Objective(max_shortfall_share=0.01),
    True,
    2880.0,
    reason="p60: 0.35% of minutes short, the cheapest within 1% (2.0 days replayed)",
)


def test_recommend_shows_the_objective_and_its_choice() -> None:
    table = format_table([_report(CHOICE)])
    assert (
        "    objective    at most 1% of minutes under-provisioned: p60: 0.35% of minutes "
        "short, the cheapest within 1% (2.0 days replayed)" in table
    ), table
    assert "(p60)" in table
    doc = report_to_json(_report(CHOICE))["signals"][0]
    assert doc["objective"] == {
        "objective": {"maxShortfallShare": 0.01},
        "quantile": 0.6,
        "met": True,
        "reason": CHOICE.reason,
    }
    assert "objective" not in format_table([_report(None)])
    assert report_to_json(_report(None))["signals"][0]["objective"] is None


def test_the_annotation_carries_the_objective_and_the_quantile_chosen() -> None:
    from predictive_scaler.reconcile import forecast_annotation

    text = forecast_annotation(_report(CHOICE).signals[0], datetime(2026, 1, 1, tzinfo=UTC))
    doc = json.loads(text)
    assert doc["quantile"] == 0.6
    assert doc["objective"] == {"maxShortfallShare": 0.01, "met": True}
    plain = json.loads(
        forecast_annotation(_report(None).signals[0], datetime(2026, 1, 1, tzinfo=UTC))
    )
    assert "objective" not in plain
