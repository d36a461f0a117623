"""`objective:` in the policy (issue 13 item 4): off by default, one of two kinds, each bad
value named with its field, value and rule."""

from __future__ import annotations

import pytest

from predictive_scaler.config import ConfigError, parse_config
from predictive_scaler.config.policy import Objective

DOC = "targets:\n  - hpa: {namespace: ns, name: a}\n"


def test_the_objective_is_off_by_default() -> None:
    assert parse_config(DOC).targets[0].policy.objective is None


def test_an_objective_in_the_defaults_or_on_a_target() -> None:
    share = parse_config("defaults:\n  objective: {maxShortfallShare: 0.01}\n" + DOC)
    assert share.targets[0].policy.objective == Objective(max_shortfall_share=0.01)
    price = parse_config(
        "defaults:\n  objective: {maxShortfallShare: 0.01}\n"
        "targets:\n  - hpa: {namespace: ns, name: a}\n    objective: {shortfallPrice: 8}\n"
    )
    assert price.targets[0].policy.objective == Objective(shortfall_price=8.0)
    # A target may turn the defaults' objective off.
    off = parse_config(
        "defaults:\n  objective: {shortfallPrice: 8}\n"
        "targets:\n  - hpa: {namespace: ns, name: a}\n    objective: null\n"
    )
    assert off.targets[0].policy.objective is None


RULE = (
    "must be null (off) or a mapping with one key: maxShortfallShare (a share of minutes "
    "in (0, 1)) or shortfallPrice (GPU-minutes per under-provisioned pod-minute, > 0)"
)


@pytest.mark.parametrize(
    "bad",
    [
        "0.01",
        "{}",
        "{maxShortfallShare: 0}",
        "{maxShortfallShare: 1.5}",
        "{maxShortfallShare: true}",
        "{shortfallPrice: -1}",
        "{shortfallPrice: .inf}",
        "{maxShortfallShare: 0.01, shortfallPrice: 2}",
        "{maxShortfall: 0.01}",
    ],
)
def test_a_bad_objective_names_field_value_and_rule(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"defaults:\n  objective: {bad}\n" + DOC)
    message = str(caught.value)
    assert "defaults.objective: got " in message, message
    assert RULE in message, message
