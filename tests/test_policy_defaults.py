"""One source of defaults: the policy's field table (config/policy.py) drives the forecaster,
the decision, the simulator and the backtest's flags; none of them keeps a copy."""

from __future__ import annotations

import ast
import inspect
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from predictive_scaler import backtest, decision, forecasting
from predictive_scaler.cli import build_parser
from predictive_scaler.config import Policy, format_duration
from predictive_scaler.config.policy import _POLICY_FIELDS

TABLE: dict[str, Any] = {item.attr: item.default for item in _POLICY_FIELDS}
"""Each policy attribute's default, from the field table."""

# Settings classes with fields that mirror a policy attribute, and the attribute each mirrors
# where the name differs.
MIRRORS: list[tuple[type[Any], dict[str, str]]] = [
    (forecasting.ForecastSettings, {}),
    (decision.DecisionPolicy, {}),
    (backtest.SimulationSettings, {"cycle_seconds": "interval_seconds"}),
]


def _mirrored(cls: type[Any], renames: dict[str, str]) -> dict[str, str]:
    names = {f.name for f in fields(cls)}
    return {n: renames.get(n, n) for n in names if renames.get(n, n) in TABLE}


def test_policy_takes_its_defaults_from_the_field_table() -> None:
    assert {f.name: f.default for f in fields(Policy)} == TABLE


@pytest.mark.parametrize(("cls", "renames"), MIRRORS, ids=lambda v: getattr(v, "__name__", ""))
def test_no_settings_class_writes_a_policy_default_of_its_own(
    cls: type[Any], renames: dict[str, str]
) -> None:
    # Read the class's source: a default written as a literal is an independent copy that a
    # change to the field table would not reach.
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    mirrored = _mirrored(cls, renames)
    copies = {
        node.target.id: ast.unparse(node.value)
        for node in body.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id in mirrored
        and node.value is not None
        and not any(isinstance(sub, ast.Name | ast.Attribute) for sub in ast.walk(node.value))
    }
    assert copies == {}, f"{cls.__name__} keeps its own copy of policy defaults"


@pytest.mark.parametrize(("cls", "renames"), MIRRORS, ids=lambda v: getattr(v, "__name__", ""))
def test_every_settings_default_is_the_tables(cls: type[Any], renames: dict[str, str]) -> None:
    mirrored = _mirrored(cls, renames)
    assert mirrored, cls
    defaults = {
        f.name: f.default for f in fields(cls) if f.name in mirrored and f.default is not MISSING
    }
    assert defaults == {name: TABLE[mirrored[name]] for name in defaults}


def test_the_settings_are_built_from_a_policy_in_one_place() -> None:
    from predictive_scaler.policy_settings import decision_policy, forecast_settings

    policy = Policy(
        step_seconds=120.0,
        warmup_seconds=900.0,
        interval_seconds=60.0,
        model="linear",
        quantile=0.8,
        floor_quantile=0.5,
        seasons=("daily",),
        history_seconds=86_400.0,
        refit_interval_seconds=3_600.0,
        stale_after_seconds=240.0,
        scale_up_step=7,
        scale_down_delay_seconds=123.0,
        scale_down_step=3,
        missing_data_hold_seconds=456.0,
    )
    assert decision_policy(policy) == decision.DecisionPolicy(
        scale_up_step=7,
        scale_down_delay_seconds=123.0,
        scale_down_step=3,
        missing_data_hold_seconds=456.0,
    )
    assert forecast_settings(policy) == forecasting.ForecastSettings(
        step_seconds=120.0,
        horizon_seconds=960.0,
        model="linear",
        quantile=0.8,
        floor_quantile=0.5,
        seasons=("daily",),
        history_seconds=86_400.0,
        refit_interval_seconds=3_600.0,
        max_age_seconds=240.0,
    )
    # The simulator of a policy decides as the live loop does.
    assert backtest.simulation_settings(policy).decision == decision_policy(policy)
    assert backtest.SimulationSettings().decision == decision_policy(Policy())


def _backtest_flags() -> dict[str, Any]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    backtest_parser = sub.choices["backtest"]  # type: ignore[index]
    return {action.dest: action for action in backtest_parser._actions}


def test_the_backtest_flags_default_to_the_policy_and_say_the_tables_default() -> None:
    from predictive_scaler.cli_backtest import _POLICY_FLAGS

    args = build_parser().parse_args(["backtest"])
    # Unset, each flag leaves the field to the policy (the target's, or Policy()).
    assert {flag: getattr(args, flag) for flag in _POLICY_FLAGS} == dict.fromkeys(_POLICY_FLAGS)
    assert set(_POLICY_FLAGS.values()) <= set(TABLE)
    kinds = {item.attr: item.kind for item in _POLICY_FIELDS}
    flags = _backtest_flags()
    for flag, attr in _POLICY_FLAGS.items():
        if attr == "step_seconds":
            continue  # what-if only: the target's step, no default of its own
        value = TABLE[attr]
        if isinstance(value, str):
            shown = value
        else:
            shown = format_duration(value) if kinds[attr] == "duration" else f"{value:g}"
        assert f"({shown})" in flags[flag].help, (flag, flags[flag].help)


def test_the_mapping_from_a_policy_is_written_once() -> None:
    # The live loop and the simulator build their settings through policy_settings; the
    # simulator alone builds a ForecastSettings of its own (at the trace's step, from its
    # SimulationSettings).
    package = Path(__file__).resolve().parents[1] / "predictive_scaler"
    built: dict[str, set[str]] = {"DecisionPolicy": set(), "ForecastSettings": set()}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = (
                node.func.id
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                else ""
            )
            if name in built:
                built[name].add(path.relative_to(package).as_posix())
    assert built == {
        "DecisionPolicy": {"policy_settings.py"},
        "ForecastSettings": {"policy_settings.py", "backtest.py"},
    }
