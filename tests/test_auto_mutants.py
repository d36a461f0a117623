"""``auto``'s choice where mutmut found the suite blind (docs/testing.md lists the survivors
that remain and why): the 8 % tie margin and the cost tie-break, short histories, what it
reports per candidate, and its errors.

The candidates here are persistence and two variants of it whose behaviour is known exactly:
the same forecasts at a higher cost, or persistence plus a constant bias, so their scores
stand in a known order.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import numpy as np
import pytest

from models import make_model
from models.auto import Auto
from models.base import FloatArray, Model
from models.baseline import Persistence
from models.errors import InsufficientHistory

STEP = 300.0
H = 4


class CostlyPersistence(Persistence):
    """Persistence's forecasts at a higher cost: always tied with it."""

    name: ClassVar[str] = "costly_persistence"
    cost: ClassVar[int] = 5


class BiasedPersistence(Persistence):
    """Persistence plus a constant: worse than it by an amount the bias sets."""

    name: ClassVar[str] = "biased_persistence"
    cost: ClassVar[int] = 0
    bias: ClassVar[float] = 0.0

    def _mean(self, horizon: int) -> FloatArray:
        return super()._mean(horizon) + self.bias


def random_walk(n: int = 800, seed: int = 9) -> np.ndarray:
    return 500 + np.cumsum(np.random.default_rng(seed).normal(0, 3.0, n))


def auto(*classes: type[Model], horizon: int = H) -> Auto:
    return Auto([partial(cls, horizon, (), 0.9) for cls in classes], horizon=horizon)


def biased(bias: float) -> type[Model]:
    return type("Biased", (BiasedPersistence,), {"bias": bias})


def test_a_tie_goes_to_the_cheaper_candidate_whatever_the_order() -> None:
    model = auto(CostlyPersistence, Persistence).fit(random_walk(), STEP)
    assert model.scores_["costly_persistence"].score == model.scores_["persistence"].score
    assert model.chosen.name == "persistence"


@pytest.mark.parametrize(
    ("bias", "ratio", "chosen"),
    [
        (-1.0, (1.0, 1.08), "biased_persistence"),
        (6.0, (1.08, 2.0), "costly_persistence"),
    ],
)
def test_the_cheaper_candidate_wins_within_eight_percent_only(
    bias: float, ratio: tuple[float, float], chosen: str
) -> None:
    model = auto(biased(bias), CostlyPersistence).fit(random_walk(), STEP)
    top = model.scores_["costly_persistence"].score
    cheap = model.scores_["biased_persistence"].score
    # The case this row is about: the cheap candidate's score relative to the best.
    assert ratio[0] < cheap / top < ratio[1], cheap / top
    assert model.chosen.name == chosen


def test_one_out_of_sample_origin_at_the_horizon_is_enough_to_score() -> None:
    # 20 points and a 10-step horizon: the hold-out is 10 points, so exactly one origin has
    # its horizon step known; auto still chooses rather than refusing.
    model = auto(Persistence, horizon=10).fit(random_walk(20), STEP)
    assert model.chosen.name == "persistence"
    assert model.skipped_ == {}


def test_a_history_shorter_than_the_horizon_skips_every_candidate_and_says_why() -> None:
    model = auto(Persistence, CostlyPersistence, horizon=10)
    with pytest.raises(InsufficientHistory) as error:
        model.fit(random_walk(12), STEP)
    reason = "no out-of-sample errors at the horizon"
    assert str(error.value) == f"auto: no candidate could fit ({reason}; {reason})"
    assert model.skipped_ == {"persistence": reason, "costly_persistence": reason}


def test_candidates_that_cannot_fit_are_skipped_with_their_own_reason() -> None:
    model = make_model("auto", horizon=H, seasons=())
    assert isinstance(model, Auto)
    y = random_walk(30)
    model.fit(y, STEP)
    sarima = make_model("sarima", horizon=H, seasons=())
    with pytest.raises(InsufficientHistory) as own:
        sarima.fit(y, STEP)
    assert model.skipped_["sarima"] == str(own.value)
    # Every candidate is timed, the skipped ones too, within the fit's own duration.
    assert set(model.fit_seconds_) == set(model.scores_) | set(model.skipped_)
    assert all(0.0 <= seconds < 60.0 for seconds in model.fit_seconds_.values())


def test_an_unfitted_auto_says_so() -> None:
    model = auto(Persistence)
    with pytest.raises(RuntimeError, match=r"^auto: fit\(\) must be called first$"):
        model.predict(H)
    with pytest.raises(RuntimeError, match=r"^auto: fit\(\) must be called first$"):
        model.update(np.ones(2))


def test_auto_needs_a_candidate() -> None:
    with pytest.raises(ValueError, match=r"^auto needs at least one candidate model$"):
        Auto([])


def test_auto_built_without_arguments_has_the_documented_defaults() -> None:
    model = Auto([Persistence])
    assert (model.horizon, model.level, model.tie_tolerance) == (15, 0.9, 0.08)
