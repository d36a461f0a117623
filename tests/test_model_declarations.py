"""A model says on its class what the loop must know of it (issue 11 item 6): whether it needs
a season and whether it fits within a cycle; the loop and the configuration ask the registry,
they keep no list of model names."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar, TypeVar

import numpy as np
import pytest

from models.baseline import Persistence
from models.registry import SINGLE_MODELS
from predictive_scaler.forecasting import ForecastSettings, TargetForecaster
from predictive_scaler.logs import get_logger
from predictive_scaler.signal_fitter import SignalFitter

STEP = 300.0
DAY = int(86_400 / STEP)
_T = TypeVar("_T")


class _QuickModel(Persistence):
    """A model added to the registry that declares itself as quick to fit as the stand-in."""

    name: ClassVar[str] = "quick_test_model"
    fits_in_cycle: ClassVar[bool] = True


class _SlowModel(Persistence):
    """The same model, declaring that it does not: fitted beside the cycles."""

    name: ClassVar[str] = "slow_test_model"
    fits_in_cycle: ClassVar[bool] = False


async def _inline(fit: Callable[[], _T]) -> _T:
    return fit()


def _fitter(model: str) -> SignalFitter:
    settings = ForecastSettings(
        step_seconds=STEP,
        horizon_seconds=900.0,
        model=model,
        seasons=("daily",),
        history_seconds=3 * 86_400.0,
        refit_interval_seconds=3600.0,
    )
    return SignalFitter(
        TargetForecaster(settings),
        _inline,
        key="ns/llm/kv",
        log=get_logger(target="ns/llm"),
        signal="kv",
        progressive=True,
    )


def _fitted(fitter: SignalFitter) -> str:
    assert fitter.forecaster.model is not None
    return str(fitter.forecaster.model.describe()["model"])


async def test_a_registered_model_that_fits_in_a_cycle_is_fitted_in_the_cycle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(SINGLE_MODELS, _QuickModel.name, _QuickModel)
    monkeypatch.setitem(SINGLE_MODELS, _SlowModel.name, _SlowModel)
    history = 5.0 + np.sin(2 * np.pi * np.arange(3 * DAY) / DAY)

    quick = _fitter(_QuickModel.name)
    async with asyncio.timeout(30):
        assert await quick.step(lambda: history, history) is None
    # No stand-in and no fit beside the cycles: the model itself decides from the first cycle.
    assert (_fitted(quick), quick.fitting) == (_QuickModel.name, False)

    slow = _fitter(_SlowModel.name)
    async with asyncio.timeout(30):
        assert await slow.step(lambda: history, history) is None
        assert (_fitted(slow), slow.fitting) == ("seasonal_naive", True)
        await slow.wait()


def test_the_models_fitted_in_a_cycle_are_those_that_declare_it() -> None:
    from models import fits_in_cycle

    declared = {name for name in SINGLE_MODELS if fits_in_cycle(name)}
    assert declared == {"persistence", "seasonal_naive", "ses", "linear"}
    assert not fits_in_cycle("auto")
    assert not fits_in_cycle("no_such_model")
