"""The explicit list of models, and fitting with a fallback to simpler ones.

A model that cannot fit (too little or too gappy history) falls back along a fixed chain
towards ``persistence``; the result says which model fits and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from models.auto import Auto
from models.base import FloatArray, Forecaster, Model
from models.baseline import Persistence, SeasonalNaive
from models.errors import InsufficientHistory
from models.holt_winters import HoltWinters
from models.linear import LinearTrend
from models.mstl import MSTLModel
from models.sarima import Sarima
from models.ses import SimpleExponentialSmoothing

SINGLE_MODELS: dict[str, type[Model]] = {
    Persistence.name: Persistence,
    SeasonalNaive.name: SeasonalNaive,
    SimpleExponentialSmoothing.name: SimpleExponentialSmoothing,
    LinearTrend.name: LinearTrend,
    HoltWinters.name: HoltWinters,
    MSTLModel.name: MSTLModel,
    Sarima.name: Sarima,
}
MODEL_NAMES: tuple[str, ...] = (*SINGLE_MODELS, Auto.name)
SEASONAL_MODEL_NAMES: tuple[str, ...] = tuple(
    name for name, cls in SINGLE_MODELS.items() if cls.needs_season
)
"""The models that cannot work without a season (``Model.needs_season``)."""


def fits_in_cycle(name: str) -> bool:
    """The model ``name`` declares its fit as quick as a cycle's reads
    (``Model.fits_in_cycle``); ``auto`` fits every candidate, so it never is."""
    cls = SINGLE_MODELS.get(name)
    return cls is not None and cls.fits_in_cycle


# Where each model goes when it cannot fit: one step simpler, ending at persistence.
FALLBACK: dict[str, str] = {
    Auto.name: HoltWinters.name,
    MSTLModel.name: HoltWinters.name,
    Sarima.name: HoltWinters.name,
    HoltWinters.name: Persistence.name,
    SeasonalNaive.name: Persistence.name,
    SimpleExponentialSmoothing.name: Persistence.name,
    LinearTrend.name: Persistence.name,
}


def make_model(
    name: str,
    horizon: int,
    seasons: Sequence[str] = ("daily", "weekly"),
    level: float = 0.9,
) -> Forecaster:
    """An unfitted model by name; ``auto`` gets every single model as a candidate."""
    if name == Auto.name:
        factories: list[Callable[[], Model]] = [
            partial(cls, horizon, seasons, level) for cls in SINGLE_MODELS.values()
        ]
        return Auto(factories, horizon=horizon, level=level)
    try:
        cls = SINGLE_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}") from None
    return cls(horizon, seasons, level)


@dataclass
class FitResult:
    """A fitted model, and the story of how it came to be the one fitted."""

    requested: str
    model: Forecaster
    notes: list[str] = field(default_factory=list)


def fit_model(
    name: str,
    y: FloatArray,
    step_seconds: float,
    horizon: int,
    seasons: Sequence[str] = ("daily", "weekly"),
    level: float = 0.9,
) -> FitResult:
    """Fit ``name``; on too little history fall back step by step and say why.

    Raises InsufficientHistory only when even persistence cannot fit (no data at all).
    """
    notes: list[str] = []
    current: str | None = name
    while current is not None:
        model = make_model(current, horizon, seasons, level)
        try:
            model.fit(y, step_seconds)
        except InsufficientHistory as exc:
            notes.append(f"{exc}; falling back to {FALLBACK.get(current, 'nothing')}")
            current = FALLBACK.get(current)
            continue
        return FitResult(requested=name, model=model, notes=notes)
    raise InsufficientHistory("; ".join(notes))
