"""The config package's shape: model knowledge comes from the models, modules stay small."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import SINGLE_MODELS
from predictive_scaler.config import ConfigError, parse_config_data

CONFIG_PACKAGE = Path(__file__).resolve().parents[1] / "predictive_scaler" / "config"


@pytest.mark.parametrize("name", sorted(SINGLE_MODELS))
def test_a_model_needs_a_season_exactly_when_it_declares_so(name: str) -> None:
    # The models say which of them need a season (Model.needs_season); config keeps no list.
    data = {"defaults": {"model": name, "seasons": []}}
    if SINGLE_MODELS[name].needs_season:
        with pytest.raises(ConfigError) as caught:
            parse_config_data(data)
        assert str(caught.value) == (
            "defaults.model: got " + repr(name) + ": needs at least one season, but seasons is "
            "empty"
        )
    else:
        assert parse_config_data(data).defaults.model == name


def test_the_seasonal_models_are_the_ones_that_cannot_forecast_without_a_season() -> None:
    assert sorted(n for n, cls in SINGLE_MODELS.items() if cls.needs_season) == [
        "mstl",
        "seasonal_naive",
    ]


def test_no_config_module_is_over_600_lines() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(CONFIG_PACKAGE.glob("*.py"))
    }
    assert len(sizes) > 5, sizes
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def test_a_policy_field_of_a_constructor_kind_needs_no_hand_written_schema() -> None:
    # Adding a policy key touches config/policy.py only (docs/configuration.md, "Adding a
    # policy field"): the JSON Schema of a duration, integer, number, boolean or choice comes
    # from its field entry. Only values with a parser of their own have a shape by hand.
    from predictive_scaler.config.json_schema import _SHAPES
    from predictive_scaler.config.policy import _POLICY_FIELDS

    by_hand = sorted(key for table, key in _SHAPES if table == "policy")
    # The constructors' kinds (`model` is a choice: its schema is an enum from the entry).
    constructed = {"duration", "integer", "number", "boolean", "string"}
    custom = sorted(item.key for item in _POLICY_FIELDS if item.kind not in constructed)
    assert by_hand == custom  # seasons, exclude, objective: lists and a mapping
