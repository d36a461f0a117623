"""Progressive fitting (issue 10 item 4): a cheap model decides at once, the configured one
replaces it when its fit lands beside the cycles, and no cycle waits on a fit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from models import FitResult
from predictive_scaler.forecasting import ForecastSettings, TargetForecaster
from predictive_scaler.logs import get_logger
from predictive_scaler.signal_fitter import CHEAP_FIRST_MODEL, SignalFitter

STEP = 300.0
DAY = int(86_400 / STEP)


def _series(points: int, seed: int = 3) -> np.ndarray:
    t = np.arange(points, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return 5.0 + 3.0 * np.sin(2 * np.pi * t / DAY) + rng.normal(0.0, 0.2, points)


def _settings(model: str = "holt_winters", refit: float = 3600.0) -> ForecastSettings:
    return ForecastSettings(
        step_seconds=STEP,
        horizon_seconds=900.0,
        model=model,
        seasons=("daily",),
        history_seconds=3 * 86_400.0,
        refit_interval_seconds=refit,
    )


class GatedRunner:
    """Runs fits in a thread, each only once the test opens the gate; counts them."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.running = 0
        self.most_running = 0
        self.fail_next = False

    async def __call__(self, fit: Callable[[], FitResult]) -> FitResult:
        model = fit.args[0]  # type: ignore[attr-defined]  # functools.partial(fit_compact, ...)
        self.started.append(model)
        if model == CHEAP_FIRST_MODEL:
            return await asyncio.to_thread(fit)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("worker died")
            return await asyncio.to_thread(fit)
        finally:
            self.running -= 1


def _fitter(
    runner: GatedRunner, *, progressive: bool = True, model: str = "holt_winters"
) -> SignalFitter:
    return SignalFitter(
        TargetForecaster(_settings(model)),
        runner,
        key="ns/llm/kv",
        log=get_logger(target="ns/llm"),
        signal="kv",
        progressive=progressive,
    )


def _model(fitter: SignalFitter) -> str:
    assert fitter.forecaster.model is not None
    return str(fitter.forecaster.model.describe()["model"])


async def test_a_cheap_model_decides_at_once_and_the_configured_one_replaces_it() -> None:
    history = _series(3 * DAY)
    runner = GatedRunner()
    fitter = _fitter(runner)
    async with asyncio.timeout(30):
        assert await fitter.step(lambda: history, history) is None
    # The first decision needs no wait for the configured model's fit.
    assert _model(fitter) == CHEAP_FIRST_MODEL
    await asyncio.sleep(0)  # the background fit's task starts
    assert fitter.fitting and runner.started == [CHEAP_FIRST_MODEL, "holt_winters"]
    fitter.forecaster.forecast()

    # Two cycles pass while the full fit runs: the stand-in takes their points.
    later = _series(3 * DAY + 2)
    for i in (0, 1):
        assert await fitter.step(lambda: later, later[3 * DAY + i : 3 * DAY + i + 1]) is None
    assert _model(fitter) == CHEAP_FIRST_MODEL
    runner.gate.set()
    async with asyncio.timeout(60):
        await fitter.wait()
    newest = _series(3 * DAY + 3)
    assert await fitter.step(lambda: newest, newest[-1:]) is None
    assert _model(fitter) == "holt_winters" and not fitter.fitting

    # It forecasts from now: the same as fitting the first history and absorbing every
    # point since.
    twin = TargetForecaster(_settings())
    twin.refit(history)
    twin.observe(newest[3 * DAY :])
    assert fitter.forecaster.forecast() == twin.forecast()


async def test_a_later_refit_runs_beside_the_cycles_and_the_model_in_use_goes_on() -> None:
    history = _series(3 * DAY)
    runner = GatedRunner()
    runner.gate.set()
    fitter = _fitter(runner)
    async with asyncio.timeout(60):
        await fitter.step(lambda: history, history)
        await fitter.wait()
        await fitter.step(lambda: history, history[-1:])
    first = fitter.forecaster.model
    assert _model(fitter) == "holt_winters"
    runner.gate.clear()
    # Push it past its refit interval (12 points at 5 m over 1 h, less its stagger).
    grown = _series(3 * DAY + 13)
    for i in range(13):
        async with asyncio.timeout(5):  # never waits on the fit
            assert await fitter.step(lambda: grown, grown[3 * DAY + i : 3 * DAY + i + 1]) is None
        if fitter.fitting:
            break
    assert fitter.fitting
    assert fitter.forecaster.model is first  # still the old one, absorbing points
    runner.gate.set()
    async with asyncio.timeout(60):
        await fitter.wait()
        await fitter.step(lambda: grown, grown[-1:])
    assert fitter.forecaster.model is not first and not fitter.fitting


async def test_a_failed_background_fit_is_the_cycles_problem_and_is_tried_again() -> None:
    history = _series(3 * DAY)
    runner = GatedRunner()
    runner.fail_next = True
    fitter = _fitter(runner)
    async with asyncio.timeout(60):
        await fitter.step(lambda: history, history)
        runner.gate.set()
        await fitter.wait()
        problem = await fitter.step(lambda: history, history[-1:])
    assert problem == "fit failed: RuntimeError: worker died"
    assert _model(fitter) == CHEAP_FIRST_MODEL  # the stand-in goes on
    async with asyncio.timeout(60):
        assert await fitter.step(lambda: history, history[-1:]) is None  # tried again
        assert fitter.fitting
        await fitter.wait()
        assert await fitter.step(lambda: history, history[-1:]) is None
    assert _model(fitter) == "holt_winters" and fitter.problem is None


async def test_background_fits_share_a_bound_so_first_fits_are_not_queued_behind_them() -> None:
    runner = GatedRunner()
    gate = asyncio.Semaphore(1)
    fitters = []
    for _ in range(3):
        fitter = _fitter(runner)
        fitter.background = gate
        fitters.append(fitter)
    history = _series(3 * DAY)
    async with asyncio.timeout(60):
        for fitter in fitters:
            await fitter.step(lambda: history, history)
        assert all(_model(f) == CHEAP_FIRST_MODEL for f in fitters)  # all decided at once
        await asyncio.sleep(0.05)
        assert runner.running == 1
        runner.gate.set()
        for fitter in fitters:
            await fitter.wait()
    assert runner.most_running == 1


@pytest.mark.parametrize(("progressive", "model"), [(False, "holt_winters"), (True, "ses")])
async def test_without_progressive_or_for_a_cheap_model_the_fit_is_awaited(
    progressive: bool, model: str
) -> None:
    runner = GatedRunner()
    runner.gate.set()
    fitter = _fitter(runner, progressive=progressive, model=model)
    history = _series(3 * DAY)
    async with asyncio.timeout(60):
        await fitter.step(lambda: history, history)
        await fitter.wait()
        await fitter.step(lambda: history, history[-1:])
    assert runner.started[0] == model and CHEAP_FIRST_MODEL not in runner.started
    assert _model(fitter) == model


async def test_cancel_stops_the_background_fit() -> None:
    runner = GatedRunner()
    fitter = _fitter(runner)
    history = _series(3 * DAY)
    async with asyncio.timeout(30):
        await fitter.step(lambda: history, history)
    assert fitter.fitting
    fitter.cancel()
    assert not fitter.fitting
    await asyncio.sleep(0)
    assert runner.running == 0
