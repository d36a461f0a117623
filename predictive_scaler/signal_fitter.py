"""Keeps one signal's forecaster fitted without making its cycles wait for a fit.

The live loop asks :meth:`SignalFitter.step` once per cycle with the points that cycle
brought. With ``progressive`` on (the live controller's default):

- a signal with no model yet gets a cheap one first (``seasonal_naive``, falling back to
  ``persistence`` on short history: tens of milliseconds on 7 days at 1 m), so its first
  decision comes within its first cycle instead of after a full fit; at a thousand targets
  the full fits of a cold start take minutes of CPU;
- the configured model (``auto`` by default) is then fitted beside the cycles, at most
  ``background`` such fits at a time so the cheap first fits of later targets are not
  queued behind them; it replaces the model in use when it lands, after absorbing the points
  that arrived while it ran;
- later refits run beside the cycles too: the model in use goes on absorbing points until
  the new one is ready.

Without ``progressive`` (the step function tests use), and for models as cheap as the
stand-in, a due fit is awaited within the cycle, as the simulator does. Either way, a failed
fit is the cycle's problem (the decision holds on it), and the next cycle tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Final

import numpy as np
import numpy.typing as npt

from models import FitResult, InsufficientHistory, InvalidSeries, fits_in_cycle
from predictive_scaler.backtest import SimulationSettings
from predictive_scaler.forecasting import TargetForecaster, refit_offset
from predictive_scaler.logs import Logger
from predictive_scaler.objective import HeadroomChoice, Objective, ObjectiveFit, fit_with_objective
from predictive_scaler.ports import FitCall

__all__ = ["CHEAP_FIRST_MODEL", "SignalFitter"]

FloatArray = npt.NDArray[np.float64]

CHEAP_FIRST_MODEL: Final = "seasonal_naive"
"""What decides until the configured model's first fit lands: no parameters to estimate,
calibrated quantiles like every model, and a fallback to ``persistence`` under a season."""


@dataclass(eq=False)
class _Running:
    """A fit running beside the cycles."""

    task: asyncio.Task[FitResult]
    window: FloatArray
    """The history it fits (the history floor is learned from it)."""
    age_points: int
    """How old the fit counts as when it lands (the refit stagger), before the points since."""
    since: list[FloatArray] = field(default_factory=list)
    """Points that arrived while it ran, absorbed by it when it lands."""


class SignalFitter:
    """One signal's fitting: when to refit, where, and what to adopt."""

    def __init__(
        self,
        forecaster: TargetForecaster,
        runner: FitCall,
        *,
        key: str,
        log: Logger,
        signal: str,
        progressive: bool = False,
        background: asyncio.Semaphore | None = None,
    ) -> None:
        self.forecaster = forecaster
        self.runner = runner
        self.key = key
        self.log = log
        self.signal = signal
        self.progressive = progressive
        self.background = background or asyncio.Semaphore(1)
        """Shared by every signal of a controller: background fits at once."""
        self.problem: str | None = None
        """Why the last fit failed; None after a fit lands."""
        self._running: _Running | None = None
        self._fully_fitted = False
        self._history_grew = False
        self._objective: tuple[Objective, SimulationSettings] | None = None
        self.choice: HeadroomChoice | None = None
        """The objective's choice at the last fit that made one (None: no objective)."""

    def set_objective(self, objective: Objective | None, scenario: SimulationSettings) -> None:
        """From the next fit on, choose the quantile for ``objective`` on the fit's history,
        replayed as ``scenario`` (the target's policy on its HPA as read this cycle)."""
        self._objective = (objective, scenario) if objective is not None else None

    @property
    def fitting(self) -> bool:
        """A fit is running beside the cycles."""
        return self._running is not None

    def history_extended(self) -> None:
        """The history grew at its old end (the rest of a staged first fetch): the model in
        use was fitted on less, so the next step fits the configured model on all of it."""
        self._history_grew = True

    async def step(
        self, window: Callable[[], FloatArray], new: FloatArray, *, complete: bool = True
    ) -> str | None:
        """Take this cycle's ``new`` points (already in the history ``window()`` returns):
        adopt a fit that landed, start one that is due, or absorb the points; the problem if
        a fit failed. While the history is not ``complete`` (its older part is still being
        read) only a stand-in is fitted, so the configured model is fitted once, on all of
        it."""
        running = self._running
        if running is not None:
            if not running.task.done():
                running.since.append(new)
                self.forecaster.observe(new)  # the model in use goes on meanwhile
                return None
            self._running = None
            return self._land(running, new)
        forecaster = self.forecaster
        if not complete:
            if forecaster.model is not None:
                forecaster.observe(new)
                return None
            age = refit_offset(self.key, forecaster.settings.refit_points)
            return await self._fit_now(window(), new, age, model=CHEAP_FIRST_MODEL)
        grew, self._history_grew = self._history_grew, False
        # A stand-in model leaves the configured one due until its fit lands.
        stand_in = self.progressive and forecaster.model is not None and not self._fully_fitted
        if not (forecaster.needs_refit() or stand_in or grew):
            forecaster.observe(new)
            return None
        if grew:
            self._fully_fitted = False  # fitted on part of the history: due on all of it
        history = window()
        age = 0 if self._fully_fitted else refit_offset(self.key, forecaster.settings.refit_points)
        if not self.progressive or fits_in_cycle(forecaster.settings.model):
            return await self._fit_now(history, new, age)  # as quick as a stand-in's
        if forecaster.model is None:
            problem = await self._fit_now(history, new, age, model=CHEAP_FIRST_MODEL)
            if forecaster.model is None:
                return problem
        self._start(history, age)
        return None

    def cancel(self) -> None:
        """Stop a fit running beside the cycles (the target is gone)."""
        if self._running is not None:
            self._running.task.cancel()
            self._running = None

    async def wait(self) -> None:
        """Until the fit running beside the cycles (if any) has finished; for tests and
        benchmarks that need the full model in place (it is adopted at the next step)."""
        if self._running is not None:
            await asyncio.wait({self._running.task})

    # ------------------------------------------------------------------ internals

    async def _fit_now(
        self, history: FloatArray, new: FloatArray, age: int, *, model: str | None = None
    ) -> str | None:
        try:
            result = await self.runner(self._job(history, model))
        except Exception as error:  # a dead worker, a fit over its budget, a model's bug
            return self._failed(error, new)
        self._adopt(result, age, history, ())
        if model is not None:
            # A stand-in: the configured model is still to be fitted, and counts as due.
            self._fully_fitted = False
        return None

    def _job(self, history: FloatArray, model: str | None = None) -> Callable[[], FitResult]:
        """The forecaster's fit; with an objective (and not a stand-in), the chooser first,
        then that fit at the quantile it picked: one job, run where fits run."""
        job = self.forecaster.fit_job(history, model=model)
        if self._objective is None or model is not None:
            return job
        objective, scenario = self._objective
        step = self.forecaster.settings.step_seconds
        return partial(fit_with_objective, history, step, scenario, objective, job.args)  # type: ignore[attr-defined]

    def _start(self, history: FloatArray, age: int) -> None:
        job = self._job(history)

        async def run() -> FitResult:
            async with self.background:
                return await self.runner(job)

        task = asyncio.get_running_loop().create_task(run(), name=f"fit {self.key}")
        self._running = _Running(task, history, age)

    def _land(self, running: _Running, new: FloatArray) -> str | None:
        if running.task.cancelled():
            error: BaseException = asyncio.CancelledError("the fit was cancelled")
        else:
            caught = running.task.exception()
            if caught is None:
                self._adopt(
                    running.task.result(), running.age_points, running.window, running.since
                )
                self.forecaster.observe(new)
                return None
            error = caught
        return self._failed(error, new)

    def _adopt(
        self, result: FitResult, age: int, history: FloatArray, since: list[FloatArray] | tuple[()]
    ) -> None:
        forecaster = self.forecaster
        if isinstance(result, ObjectiveFit):
            # The chosen quantile is the forecaster's until the next choice.
            forecaster.settings = replace(forecaster.settings, quantile=result.quantile)
            self.choice = result.choice
            self.log.info(
                "headroom_chosen",
                signal=self.signal,
                quantile=result.quantile,
                reason=result.choice.reason if result.choice else None,
            )
        forecaster.adopt(result, age_points=age, history=history)
        for points in since:  # what arrived while it ran, so it forecasts from now
            forecaster.observe(points)
        self._fully_fitted = True
        self.problem = None
        self.log.info(
            "forecast_refitted",
            signal=self.signal,
            requested=result.requested,
            model=str(result.model.describe().get("model")),
            points=int(history.size),
            notes=result.notes or None,
        )

    def _failed(self, error: BaseException, new: FloatArray) -> str:
        if isinstance(error, (InsufficientHistory, InvalidSeries)):
            self.problem = f"history too short or unusable: {error}"
            self.log.warning("forecast_fit_failed", signal=self.signal, error=str(error))
        else:
            self.problem = f"fit failed: {type(error).__name__}: {error}"
            self.log.warning("forecast_fit_failed", signal=self.signal, error=self.problem)
        if self.forecaster.model is not None:
            self.forecaster.observe(new)  # keep the old model going on the new points
        return self.problem
