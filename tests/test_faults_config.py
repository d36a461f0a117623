"""Bad ConfigMaps never stop the loop: the last good configuration stays in force, and the
error names the field, the value and the rule it broke (in the log, the metric and a Warning
Event on the ConfigMap)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from predictive_scaler.config import parse_config
from predictive_scaler.runtime import Controller
from tests.chaos import PrometheusFaultProxy
from tests.kube_double import KubeDouble, make_hpa
from tests.support import closing_controller
from tests.test_faults_kube import CONFIG, NS, flat_demand, inline


def _laughs(levels: int = 9) -> str:
    lines = ['  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "anchors:\n" + "\n".join(lines) + f"\ntargets: *a{levels - 1}\n"


def _with(line: str) -> str:
    return CONFIG.replace("  staleAfter: 15m\n", f"  staleAfter: 15m\n{line}\n")


PWNED = "/tmp/predictive-scaler-chaos-pwned"


def _pwned() -> bool:
    """Whether the `!!python/object/apply:os.system` case ran its command."""
    return os.path.exists(PWNED)


# (case, text, substrings the error must contain: path, value, rule)
BAD_CONFIGS: list[tuple[str, str | None, tuple[str, ...]]] = [
    ("broken_yaml", CONFIG + "  - hpa: {namespace: busy\n", ("<yaml>", "line")),
    ("tab_indent", CONFIG.replace("  interval: 5m", "\tinterval: 5m"), ("<yaml>",)),
    ("wrong_type_int", _with("  scaleUpStep: four"), ("defaults.scaleUpStep", "'four'", "integer")),
    (
        "wrong_type_list",
        CONFIG.replace("scaleDownDelay: 10m", "scaleDownDelay: [10m]"),
        ("defaults.scaleDownDelay", "10m"),
    ),
    (
        "wrong_type_bool",
        CONFIG.replace("interval: 5m", "interval: true"),
        ("defaults.interval", "True"),
    ),
    (
        "targets_not_a_list",
        CONFIG.split("targets:")[0] + "targets: {hpa: nim}\n",
        ("targets", "list"),
    ),
    (
        "unknown_field",
        _with("  scaleUpStpe: 2"),
        ("defaults.scaleUpStpe", "unknown key", "scaleUpStep"),
    ),
    (
        "unknown_target_field",
        CONFIG.replace("    signals:", "    sigals: []\n    signals:"),
        ("targets[0].sigals", "unknown key"),
    ),
    ("negative_int", _with("  scaleDownStep: -1"), ("defaults.scaleDownStep", "-1", "between")),
    (
        "negative_duration",
        CONFIG.replace("missingDataHold: 30m", "missingDataHold: -30m"),
        ("defaults.missingDataHold", "-30m"),
    ),
    ("zero_interval", CONFIG.replace("interval: 5m", "interval: 0s"), ("defaults.interval", "0s")),
    (
        "huge_int",
        _with("  scaleUpStep: 100000000000000000000000"),
        ("defaults.scaleUpStep", "100000000000000000000000", "between"),
    ),
    (
        "huge_duration",
        CONFIG.replace("history: 1d", "history: 100000d"),
        ("defaults.history", "100000d"),
    ),
    ("infinite_number", _with("  quantile: .inf"), ("defaults.quantile",)),
    ("nan_number", _with("  quantile: .nan"), ("defaults.quantile",)),
    (
        "duplicate_target",
        CONFIG + CONFIG.split("targets:\n")[1],
        ("targets[1]", "duplicate target"),
    ),
    ("duplicate_key", _with("  interval: 1m"), ("duplicate key",)),
    ("python_tag", f"defaults: !!python/object/apply:os.system ['touch {PWNED}']\n", ("<yaml>",)),
    ("billion_laughs", _laughs(), ("targets[0]", "mapping")),
    ("empty", "", ("<root>", "empty")),
    ("root_is_a_list", "- defaults\n- targets\n", ("<root>", "mapping")),
    ("missing_key", None, ("config.yaml", "missing")),
    (
        "bad_label_name",
        CONFIG.replace("    signals:", "    selector: {'a b': x}\n    signals:"),
        ("targets[0].selector",),
    ),
]


@pytest.fixture
async def prometheus() -> AsyncIterator[PrometheusFaultProxy]:
    async with PrometheusFaultProxy(series=flat_demand) as fake:
        yield fake


@pytest.fixture
async def controller(
    kube_api: client.ApiClient, prometheus: PrometheusFaultProxy
) -> AsyncIterator[Controller]:
    async with closing_controller(
        kube_api, prometheus_url=prometheus.url, fit_runner=inline
    ) as made:
        yield made


@pytest.mark.parametrize(("case", "text", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
async def test_a_bad_config_keeps_the_last_good_one_and_says_why(
    kube_server: KubeDouble,
    controller: Controller,
    case: str,
    text: str | None,
    expected: tuple[str, ...],
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    assert await controller.load_config_text(CONFIG)
    good = controller.config
    [first] = await controller.run_due()
    assert first.recommended == 3

    assert not await controller.load_config_text(text)
    assert controller.config is good  # the last good one stays in force
    [event] = kube_server.list_events("ops")
    assert event["type"] == "Warning" and event["reason"] == "ConfigRejected"
    for part in expected:  # the same text as the `config_rejected` log line
        assert part in event["message"], (part, event["message"])
    assert "predictive_scaler_config_valid 0.0" in controller.metrics.generate_latest().decode()
    assert not _pwned()

    # The loop goes on with the last good targets.
    [again] = await controller.run_due(force=True)
    assert again.error is None and again.recommended == 3


async def test_a_good_config_after_bad_ones_is_taken(
    kube_server: KubeDouble, controller: Controller
) -> None:
    kube_server.put_object(make_hpa(NS, "nim", 1, 10))
    assert await controller.load_config_text(CONFIG)
    for _case, text, _expected in BAD_CONFIGS:
        assert not await controller.load_config_text(text)
    assert await controller.load_config_text(CONFIG.replace("warmup: 10m", "warmup: 15m"))
    assert controller.config is not None
    assert controller.config.defaults.warmup_seconds == 900
    assert "predictive_scaler_config_valid 1.0" in controller.metrics.generate_latest().decode()


def test_every_case_is_rejected_offline_too() -> None:
    """`predictive-scaler validate-config` uses the same parser: no case slips through."""
    from predictive_scaler.config import ConfigError

    for case, text, _expected in BAD_CONFIGS:
        if text is None:
            continue
        with pytest.raises(ConfigError):
            parse_config(text)
        assert case
