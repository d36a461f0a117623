"""Configuration: parsing, defaults, presets, every validation rule, and the docs in sync."""

from __future__ import annotations

import copy
import pickle
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictive_scaler.config import (
    DEFAULT_SIGNALS,
    SIGNAL_PRESETS,
    Config,
    ConfigError,
    ConfigIssue,
    ControllerConfig,
    Exclusion,
    Policy,
    Signal,
    Target,
    format_duration,
    load_config_file,
    parse_config,
    parse_config_data,
    parse_duration,
    render_reference,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
HPA = {"namespace": "llm", "name": "nim-llm"}


def one_target(**keys: Any) -> dict[str, Any]:
    """A config with one target whose HPA is llm/nim-llm, plus ``keys`` on the target."""
    return {"targets": [{"hpa": dict(HPA), **keys}]}


def with_defaults(**keys: Any) -> dict[str, Any]:
    return {"defaults": keys, **one_target()}


def with_prometheus(**keys: Any) -> dict[str, Any]:
    return {"prometheus": {"url": "http://prometheus:9090", **keys}}


def controller(**keys: Any) -> dict[str, Any]:
    return {"controller": keys}


def issues_of(data: object) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        parse_config_data(data)
    return caught.value.errors


def issue_at(data: object, path: str) -> ConfigIssue:
    issues = issues_of(data)
    matching = [issue for issue in issues if issue.path == path]
    assert matching, f"no issue at {path!r}; got:\n" + "\n".join(map(str, issues))
    return matching[0]


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("6h", 21600.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (" 5m ", 300.0),
        ("90", 90.0),
        (90, 90.0),
        (1.5, 1.5),
    ],
)
def test_duration_parses(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "-5m",
        -1,
        -0.5,
        "0s",
        "0",
        0,
        "ten minutes",
        "5x",
        "5 m",
        "1H",
        "30m1h",
        "1h1h",
        "1e3",
        "nan",
        "inf",
        float("nan"),
        float("inf"),
        10**400,
        "9" * 400 + "s",
        "1" * 30 + "d",
        True,
        None,
        [],
        {},
    ],
)
def test_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_zero_only_when_allowed() -> None:
    assert parse_duration("0s", allow_zero=True) == 0.0
    assert parse_duration(0, allow_zero=True) == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (30, "30s"), (90, "1m30s"), (5400, "1h30m"), (90 * 86400, "90d"), (0.5, "0.5s")],
)
def test_duration_formats_and_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, allow_zero=True) == seconds


# --------------------------------------------------------------------------------------------
# Valid configurations: defaults, overrides, presets
# --------------------------------------------------------------------------------------------


def test_minimal_target_gets_builtin_defaults() -> None:
    config = parse_config("targets:\n  - hpa: {namespace: llm, name: nim-llm}\n")
    assert config.defaults == Policy()
    assert config.controller == ControllerConfig()
    assert config.prometheus is None
    (target,) = config.targets
    assert target == Target(id="llm/nim-llm", namespace="llm", name="nim-llm")
    assert target.signals == DEFAULT_SIGNALS
    assert target.policy.interval_seconds == 30.0
    assert target.policy.history_seconds == 7 * 86400
    assert target.policy.step_seconds == 60.0
    assert target.policy.warmup_seconds == 600.0
    assert target.policy.quantile == 0.9
    assert target.policy.model == "auto"
    assert target.policy.seasons == ("daily", "weekly")
    assert target.policy.refit_interval_seconds == 6 * 3600
    assert target.policy.scale_up_step == 4
    assert target.policy.scale_down_delay_seconds == 600.0
    assert target.policy.scale_down_step == 1
    assert target.policy.missing_data_hold_seconds == 1800.0
    assert target.policy.stale_after_seconds == 300.0
    assert target.policy.min_history_seconds == 86400.0
    assert target.policy.dry_run is False
    assert target.policy.exclude == ()


@pytest.mark.parametrize("text", ["{}", "defaults:\ntargets:\ncontroller:\nprometheus:\n"])
def test_empty_sections_are_allowed(text: str) -> None:
    assert parse_config(text) == Config()


def test_defaults_apply_and_targets_override() -> None:
    config = parse_config(
        """
defaults:
  warmup: 20m
  scaleUpStep: 6
  seasons: [daily]
  exclude:
    - {start: "2024-12-24T00:00:00Z", end: "2024-12-27T00:00:00Z", reason: holidays}
targets:
  - hpa: {namespace: llm, name: a}
  - hpa: {namespace: llm, name: b}
    warmup: 5m
    scaleUpStep: 2
    seasons: [weekly, daily]
    exclude: []
    dryRun: true
"""
    )
    first, second = config.targets
    assert config.defaults.warmup_seconds == 1200.0
    assert first.policy == config.defaults
    assert first.policy.exclude == (
        Exclusion(
            datetime(2024, 12, 24, tzinfo=UTC), datetime(2024, 12, 27, tzinfo=UTC), "holidays"
        ),
    )
    assert second.policy.warmup_seconds == 300.0
    assert second.policy.scale_up_step == 2
    assert second.policy.seasons == ("daily", "weekly")
    assert second.policy.exclude == ()  # a target's list replaces the defaults' list
    assert second.policy.dry_run is True
    assert second.policy.interval_seconds == config.defaults.interval_seconds


def test_horizon_is_warmup_plus_interval() -> None:
    assert Policy(warmup_seconds=600.0, interval_seconds=30.0).horizon_seconds == 630.0


def test_enabled_targets_keeps_order() -> None:
    config = parse_config_data(
        {
            "targets": [
                {"hpa": {"namespace": "a", "name": "one"}},
                {"hpa": {"namespace": "a", "name": "two"}, "enabled": False},
                {"hpa": {"namespace": "a", "name": "three"}, "name": "third"},
            ]
        }
    )
    assert [target.id for target in config.enabled_targets()] == ["a/one", "third"]


def test_selector_gives_match_labels_with_namespace_first() -> None:
    config = parse_config_data(one_target(selector={"model": 'a"b\\c', "app": "nim-llm"}))
    (target,) = config.targets
    assert target.selector == (("app", "nim-llm"), ("model", 'a"b\\c'))
    assert list(target.match_labels.items()) == [
        ("namespace", "llm"),
        ("app", "nim-llm"),
        ("model", 'a"b\\c'),
    ]


@pytest.mark.parametrize(
    "query",
    ["sum(x{${matchers}})", "sum(x)", "label_replace(x, 'a', '$$1', 'b', '(.*)')"],
)
def test_query_placeholders_allowed(query: str) -> None:
    config = parse_config_data(one_target(signals=[{"preset": "nim", "query": query}]))
    assert config.targets[0].signals[0].query == query


@pytest.mark.parametrize("preset", ["nim", "vllm"])
def test_presets_fill_queries(preset: str) -> None:
    config = parse_config_data(one_target(signals=[{"preset": preset}]))
    (signal,) = config.targets[0].signals
    values = SIGNAL_PRESETS[preset]
    assert signal == Signal(
        name="kv_cache",
        query=values["query"],
        queue_query=values["queueQuery"],
        running_query=values["runningQuery"],
        target_per_pod=None,
        hpa_metric=values["hpaMetric"],
    )


def test_vllm_preset_uses_prefixed_metrics() -> None:
    (signal,) = parse_config_data(one_target(signals=[{"preset": "vllm"}])).targets[0].signals
    assert signal.query == (
        "sum(vllm:gpu_cache_usage_perc{${matchers}} or vllm:kv_cache_usage_perc{${matchers}})"
    )
    assert signal.queue_query == "sum(vllm:num_requests_waiting{${matchers}})"
    assert signal.running_query == "sum(vllm:num_requests_running{${matchers}})"
    assert signal.hpa_metric == "vllm_kv_cache_usage_perc"


def test_explicit_keys_override_preset() -> None:
    signals = [
        {
            "preset": "vllm",
            "name": "kv_v1",
            "query": "sum(vllm:kv_cache_usage_perc{${matchers}})",
            "queueQuery": None,
            "hpaMetric": "vllm:kv_cache_usage_perc",
            "targetPerPod": 0.75,
        }
    ]
    (signal,) = parse_config_data(one_target(signals=signals)).targets[0].signals
    assert signal.name == "kv_v1"
    assert signal.query == "sum(vllm:kv_cache_usage_perc{${matchers}})"
    assert signal.queue_query is None  # null disables saturation correction
    assert signal.hpa_metric == "vllm:kv_cache_usage_perc"
    assert signal.target_per_pod == 0.75


def test_custom_signals() -> None:
    signals = [
        {"name": "kv_cache", "preset": "nim"},
        {"name": "rps", "query": "sum(rate(requests_total{${matchers}}[1m]))", "targetPerPod": 20},
    ]
    config = parse_config_data(one_target(signals=signals))
    rps = config.targets[0].signals[1]
    assert rps == Signal(name="rps", query="sum(rate(requests_total{${matchers}}[1m]))",
                         target_per_pod=20.0)  # fmt: skip


def test_prometheus_and_controller_sections() -> None:
    config = parse_config(
        """
prometheus:
  url: https://mimir.example.com/prometheus
  timeout: 30s
  basicAuth: {username: scaler, passwordFile: /var/run/secrets/prom/password}
  caBundle: /etc/ssl/prom/ca.pem
  headers: {X-Scope-OrgID: tenant-1}
controller:
  metricsPort: 9100
  leaseNamespace: ops
  leaseDuration: 30s
  renewPeriod: 10s
"""
    )
    assert config.prometheus is not None
    assert config.prometheus.url == "https://mimir.example.com/prometheus"
    assert config.prometheus.timeout_seconds == 30.0
    assert config.prometheus.basic_auth is not None
    assert config.prometheus.basic_auth.password_file == "/var/run/secrets/prom/password"
    assert config.prometheus.headers == (("X-Scope-OrgID", "tenant-1"),)
    assert "tenant-1" not in repr(config.prometheus)
    assert config.prometheus.verify_tls is True
    assert config.controller == ControllerConfig(
        metrics_port=9100,
        lease_namespace="ops",
        lease_duration_seconds=30.0,
        renew_period_seconds=10.0,
    )


def test_yaml_timestamps_and_merge_keys_are_accepted() -> None:
    config = parse_config(
        """
defaults:
  exclude: [{start: 2024-01-01T00:00:00+02:00, end: 2024-01-01T06:00:00Z}]
targets:
  - &base {hpa: {namespace: llm, name: a}, warmup: 5m}
  - <<: *base
    hpa: {namespace: llm, name: b}
"""
    )
    (exclusion,) = config.defaults.exclude
    assert exclusion.start == datetime(2023, 12, 31, 22, tzinfo=UTC)
    assert exclusion.end == datetime(2024, 1, 1, 6, tzinfo=UTC)
    assert [t.policy.warmup_seconds for t in config.targets] == [300.0, 300.0]


def test_config_is_hashable_and_comparable() -> None:
    text = "targets: [{hpa: {namespace: llm, name: a}, selector: {app: a}}]"
    assert parse_config(text) == parse_config(text)
    assert hash(parse_config(text)) == hash(parse_config(text))


# --------------------------------------------------------------------------------------------
# Every rule: the exact path, and the rule text
# --------------------------------------------------------------------------------------------

EXCLUSION = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z"}

RULE_CASES: list[tuple[str, object, str, str]] = [
    # document shape
    ("top level list", [1, 2], "<root>", "must be a mapping"),
    ("top level scalar", "text", "<root>", "must be a mapping"),
    ("unknown root key", {"target": []}, "target", "unknown key (did you mean 'targets'?)"),
    ("defaults not mapping", {"defaults": [1]}, "defaults", "must be a mapping"),
    ("targets not list", {"targets": {"a": 1}}, "targets", "must be a list of targets"),
    ("target not mapping", {"targets": ["llm/nim"]}, "targets[0]", "must be a mapping"),
    ("prometheus not mapping", {"prometheus": "http://x"}, "prometheus", "must be a mapping"),
    ("controller not mapping", {"controller": 1}, "controller", "must be a mapping"),
    # unknown keys at every level
    ("unknown defaults key", with_defaults(wramup="10m"), "defaults.wramup", "allowed keys:"),
    ("unknown target key", one_target(minReplicas=2), "targets[0].minReplicas", "unknown key"),
    (
        "unknown hpa key",
        {"targets": [{"hpa": {**HPA, "kind": "HPA"}}]},
        "targets[0].hpa.kind",
        "allowed keys: namespace, name",
    ),
    (
        "unknown signal key",
        one_target(signals=[{"preset": "nim", "metric": "x"}]),
        "targets[0].signals[0].metric",
        "unknown key",
    ),
    (
        "unknown exclusion key",
        with_defaults(exclude=[{**EXCLUSION, "why": "x"}]),
        "defaults.exclude[0].why",
        "allowed keys: start, end, reason",
    ),
    ("unknown controller key", {"controller": {"port": 1}}, "controller.port", "unknown key"),
    (
        "unknown prometheus key",
        with_prometheus(address="x"),
        "prometheus.address",
        "allowed keys: url",
    ),
    ("non-string key", {1: "x"}, "[1]", "unknown key"),
    # types
    ("bool is not an int", one_target(scaleUpStep=True), "targets[0].scaleUpStep", "integer"),
    ("float is not an int", one_target(scaleDownStep=1.0), "targets[0].scaleDownStep", "integer"),
    ("string is not an int", one_target(scaleUpStep="4"), "targets[0].scaleUpStep", "integer"),
    ("string is not a number", with_defaults(quantile="0.9"), "defaults.quantile", "number"),
    ("bool is not a number", with_defaults(quantile=True), "defaults.quantile", "number"),
    ("string is not a bool", with_defaults(dryRun="yes"), "defaults.dryRun", "true or false"),
    ("int is not a bool", one_target(enabled=1), "targets[0].enabled", "true or false"),
    ("null is not a duration", with_defaults(warmup=None), "defaults.warmup", "duration"),
    ("bool is not a duration", with_defaults(warmup=True), "defaults.warmup", "duration"),
    ("garbage duration", with_defaults(warmup="ten minutes"), "defaults.warmup", "duration"),
    # ranges
    (
        "scaleDownStep negative",
        one_target(scaleDownStep=-1),
        "targets[0].scaleDownStep",
        "must be an integer between 1 and 1000",
    ),
    ("scaleDownStep zero", one_target(scaleDownStep=0), "targets[0].scaleDownStep", "1 and 1000"),
    ("scaleUpStep huge", one_target(scaleUpStep=1001), "targets[0].scaleUpStep", "1 and 1000"),
    ("scaleUpStep enormous", one_target(scaleUpStep=10**100), "targets[0].scaleUpStep", "1000"),
    ("interval too short", with_defaults(interval="1s"), "defaults.interval", "between 5s and 1h"),
    ("interval too long", with_defaults(interval="2h"), "defaults.interval", "between 5s and 1h"),
    ("interval zero", with_defaults(interval=0), "defaults.interval", "between 5s and 1h"),
    ("interval negative", with_defaults(interval="-30s"), "defaults.interval", "between 5s"),
    ("history too long", with_defaults(history="91d"), "defaults.history", "between 1h and 90d"),
    ("history too short", with_defaults(history="30m"), "defaults.history", "between 1h and 90d"),
    ("step zero", with_defaults(step="0s"), "defaults.step", "between 1s and 1h"),
    ("warmup too long", one_target(warmup="3h"), "targets[0].warmup", "between 1s and 2h"),
    ("warmup zero", one_target(warmup=0), "targets[0].warmup", "between 1s and 2h"),
    ("refit too long", with_defaults(refitInterval="8d"), "defaults.refitInterval", "1m and 7d"),
    (
        "scaleDownDelay too long",
        with_defaults(scaleDownDelay="2d"),
        "defaults.scaleDownDelay",
        "between 0s and 1d",
    ),
    ("hold negative", with_defaults(missingDataHold=-1), "defaults.missingDataHold", "0s and 1d"),
    ("staleAfter zero", with_defaults(staleAfter=0), "defaults.staleAfter", "between 1s and 1d"),
    ("minHistory > 90d", with_defaults(minHistory="91d"), "defaults.minHistory", "0s and 90d"),
    ("quantile 0.5", with_defaults(quantile=0.5), "defaults.quantile", "greater than 0.5"),
    ("quantile 1", with_defaults(quantile=1), "defaults.quantile", "less than 1"),
    ("quantile nan", with_defaults(quantile=float("nan")), "defaults.quantile", "less than 1"),
    # enums
    ("unknown model", with_defaults(model="prophet"), "defaults.model", "must be one of: auto"),
    ("unknown season", with_defaults(seasons=["monthly"]), "defaults.seasons", "daily, weekly"),
    ("repeated season", one_target(seasons=["daily", "daily"]), "targets[0].seasons", "distinct"),
    ("seasons not list", with_defaults(seasons="daily"), "defaults.seasons", "must be a list"),
    # cross-field rules, reported where the value is set
    (
        "step > history/10",
        with_defaults(step="1h", history="5h", staleAfter="1h", minHistory="1h"),
        "defaults.step",
        "must be at most history / 10 (history is 5h)",
    ),
    (
        "history < 10 step (target)",
        {"defaults": {"step": "10m"}, **one_target(history="1h", staleAfter="10m")},
        "targets[0].history",
        "must be at least step × 10 (step is 10m)",
    ),
    (
        "interval > warmup",
        with_defaults(interval="15m"),
        "defaults.interval",
        "must be at most warmup (warmup is 10m)",
    ),
    (
        "warmup < interval (target)",
        one_target(warmup="10s"),
        "targets[0].warmup",
        "must be at least interval (interval is 30s)",
    ),
    (
        "minHistory > history",
        one_target(minHistory="8d"),
        "targets[0].minHistory",
        "must be at most history (history is 7d)",
    ),
    (
        "refitInterval < interval",
        {"defaults": {"interval": "5m"}, **one_target(refitInterval="1m")},
        "targets[0].refitInterval",
        "must be at least interval (interval is 5m)",
    ),
    (
        "staleAfter < step",
        with_defaults(staleAfter="30s"),
        "defaults.staleAfter",
        "must be at least step (step is 1m)",
    ),
    (
        "seasonal model without seasons",
        with_defaults(model="mstl", seasons=[]),
        "defaults.model",
        "needs at least one season",
    ),
    (
        "empty seasons for inherited seasonal model",
        {"defaults": {"model": "seasonal_naive"}, **one_target(seasons=[])},
        "targets[0].seasons",
        "must not be empty when model is seasonal_naive",
    ),
    # exclusions
    (
        "exclusion start == end",
        with_defaults(exclude=[{"start": EXCLUSION["start"], "end": EXCLUSION["start"]}]),
        "defaults.exclude[0].end",
        "must be later than start",
    ),
    (
        "exclusion start > end",
        one_target(exclude=[{"start": EXCLUSION["end"], "end": EXCLUSION["start"]}]),
        "targets[0].exclude[0].end",
        "must be later than start",
    ),
    (
        "exclusion naive string",
        with_defaults(exclude=[{**EXCLUSION, "start": "2024-01-01T00:00:00"}]),
        "defaults.exclude[0].start",
        "with a timezone",
    ),
    (
        "exclusion naive datetime",
        with_defaults(exclude=[{**EXCLUSION, "end": datetime(2024, 1, 2)}]),
        "defaults.exclude[0].end",
        "with a timezone",
    ),
    (
        "exclusion date only",
        with_defaults(exclude=[{**EXCLUSION, "start": date(2024, 1, 1)}]),
        "defaults.exclude[0].start",
        "ISO-8601 date-time",
    ),
    (
        "exclusion garbage",
        with_defaults(exclude=[{**EXCLUSION, "start": "yesterday"}]),
        "defaults.exclude[0].start",
        "ISO-8601",
    ),
    (
        "exclusion missing end",
        with_defaults(exclude=[{"start": EXCLUSION["start"]}]),
        "defaults.exclude[0].end",
        "required key is missing",
    ),
    (
        "exclusion reason not a string",
        with_defaults(exclude=[{**EXCLUSION, "reason": 5}]),
        "defaults.exclude[0].reason",
        "must be a string",
    ),
    ("exclusion not a mapping", with_defaults(exclude=["x"]), "defaults.exclude[0]", "mapping"),
    ("exclude not a list", with_defaults(exclude=EXCLUSION), "defaults.exclude", "a list of"),
    # targets
    ("hpa missing", {"targets": [{"name": "x"}]}, "targets[0].hpa", "required key is missing"),
    ("hpa not mapping", {"targets": [{"hpa": "llm/nim"}]}, "targets[0].hpa", "{namespace, name}"),
    (
        "hpa namespace missing",
        {"targets": [{"hpa": {"name": "x"}}]},
        "targets[0].hpa.namespace",
        "required key is missing",
    ),
    (
        "hpa namespace uppercase",
        {"targets": [{"hpa": {"namespace": "LLM", "name": "x"}}]},
        "targets[0].hpa.namespace",
        "DNS-1123 label",
    ),
    (
        "hpa namespace too long",
        {"targets": [{"hpa": {"namespace": "a" * 64, "name": "x"}}]},
        "targets[0].hpa.namespace",
        "at most 63",
    ),
    (
        "hpa name with underscore",
        {"targets": [{"hpa": {"namespace": "llm", "name": "nim_llm"}}]},
        "targets[0].hpa.name",
        "DNS-1123 subdomain",
    ),
    (
        "hpa name too long",
        {"targets": [{"hpa": {"namespace": "llm", "name": "a" * 254}}]},
        "targets[0].hpa.name",
        "at most 253",
    ),
    (
        "hpa name not a string",
        {"targets": [{"hpa": {"namespace": "llm", "name": 5}}]},
        "targets[0].hpa.name",
        "DNS-1123 subdomain",
    ),
    (
        "duplicate hpa",
        {"targets": [{"hpa": HPA}, {"hpa": HPA, "name": "other"}]},
        "targets[1].hpa",
        "duplicate target: targets[0] manages the same HPA",
    ),
    (
        "duplicate id",
        {"targets": [{"hpa": HPA, "name": "x"}, {"hpa": {**HPA, "name": "b"}, "name": "x"}]},
        "targets[1].name",
        "duplicate target id: targets[0] has the same id",
    ),
    (
        "explicit id equal to default id",
        {"targets": [{"hpa": HPA}, {"hpa": {**HPA, "name": "b"}, "name": "llm/nim-llm"}]},
        "targets[1].name",
        "duplicate target id",
    ),
    ("bad id", one_target(name="my target"), "targets[0].name", "1-253 characters"),
    (
        "selector key not a label name",
        one_target(selector={"app.kubernetes.io/name": "nim"}),
        "targets[0].selector['app.kubernetes.io/name']",
        "Prometheus label names",
    ),
    (
        "selector namespace",
        one_target(selector={"namespace": "llm"}),
        "targets[0].selector.namespace",
        "not 'namespace'",
    ),
    ("selector value int", one_target(selector={"v": 1}), "targets[0].selector.v", "strings"),
    ("selector value empty", one_target(selector={"v": ""}), "targets[0].selector.v", "non-empty"),
    ("selector not mapping", one_target(selector=["app"]), "targets[0].selector", "mapping"),
    # signals
    ("signals empty", one_target(signals=[]), "targets[0].signals", "non-empty list"),
    ("signals not list", one_target(signals={"preset": "nim"}), "targets[0].signals", "list"),
    ("signal not mapping", one_target(signals=["nim"]), "targets[0].signals[0]", "mapping"),
    (
        "signal without query or preset",
        one_target(signals=[{"name": "a", "targetPerPod": 1}]),
        "targets[0].signals[0].query",
        "is required unless preset is set",
    ),
    (
        "signal without name",
        one_target(signals=[{"query": "up", "targetPerPod": 1}]),
        "targets[0].signals[0].name",
        "is required unless preset is set",
    ),
    (
        "signal null query with preset",
        one_target(signals=[{"preset": "nim", "query": None}]),
        "targets[0].signals[0].query",
        "non-empty PromQL",
    ),
    (
        "duplicate signal names",
        one_target(signals=[{"preset": "nim"}, {"preset": "vllm"}]),
        "targets[0].signals[1].name",
        "duplicate signal name; signals[0] has the same name",
    ),
    (
        "queueQuery without runningQuery",
        one_target(signals=[{"name": "a", "query": "up", "targetPerPod": 1, "queueQuery": "q"}]),
        "targets[0].signals[0].runningQuery",
        "is required when queueQuery is set",
    ),
    (
        "no targetPerPod and no hpaMetric",
        one_target(signals=[{"name": "a", "query": "up"}]),
        "targets[0].signals[0].targetPerPod",
        "is required when hpaMetric is null",
    ),
    (
        "preset with hpaMetric nulled",
        one_target(signals=[{"preset": "nim", "hpaMetric": None}]),
        "targets[0].signals[0].targetPerPod",
        "is required when hpaMetric is null",
    ),
    (
        "targetPerPod zero",
        one_target(signals=[{"preset": "nim", "targetPerPod": 0}]),
        "targets[0].signals[0].targetPerPod",
        "greater than 0",
    ),
    (
        "targetPerPod string",
        one_target(signals=[{"preset": "nim", "targetPerPod": "0.7"}]),
        "targets[0].signals[0].targetPerPod",
        "must be a number",
    ),
    (
        "targetPerPod huge",
        one_target(signals=[{"preset": "nim", "targetPerPod": 10**400}]),
        "targets[0].signals[0].targetPerPod",
        "at most 1000000",
    ),
    (
        "targetPerPod bool",
        one_target(signals=[{"preset": "nim", "targetPerPod": True}]),
        "targets[0].signals[0].targetPerPod",
        "must be a number",
    ),
    (
        "unknown preset",
        one_target(signals=[{"preset": "tgi"}]),
        "targets[0].signals[0].preset",
        "must be one of: nim, vllm",
    ),
    (
        "bad signal name",
        one_target(signals=[{"preset": "nim", "name": "KV-Cache"}]),
        "targets[0].signals[0].name",
        "a-z, 0-9 and _",
    ),
    (
        "unknown placeholder",
        one_target(signals=[{"preset": "nim", "query": "sum(x{${namespace}})"}]),
        "targets[0].signals[0].query",
        "whose only placeholder is ${matchers}",
    ),
    (
        "bare placeholder",
        one_target(signals=[{"preset": "nim", "query": "sum(x{namespace=\"$ns\"})"}]),
        "targets[0].signals[0].query",
        "whose only placeholder is ${matchers}",
    ),
    (
        "unclosed placeholder",
        one_target(signals=[{"preset": "nim", "query": "sum(x{${matchers)"}]),
        "targets[0].signals[0].query",
        "whose only placeholder is ${matchers}",
    ),
    (
        "empty query",
        one_target(signals=[{"preset": "nim", "query": "  "}]),
        "targets[0].signals[0].query",
        "non-empty PromQL",
    ),
    (
        "query too long",
        one_target(signals=[{"preset": "nim", "query": "x" * 10001}]),
        "targets[0].signals[0].query",
        "at most 10000 characters",
    ),
    (
        "bad hpaMetric",
        one_target(signals=[{"preset": "nim", "hpaMetric": "gpu cache"}]),
        "targets[0].signals[0].hpaMetric",
        "must be a metric name",
    ),
    # prometheus
    ("url missing", {"prometheus": {"timeout": "5s"}}, "prometheus.url", "required key"),
    ("url scheme", {"prometheus": {"url": "ftp://p:9090"}}, "prometheus.url", "http:// or https://"),
    ("url no host", {"prometheus": {"url": "http://"}}, "prometheus.url", "with a host"),
    ("url bad port", {"prometheus": {"url": "http://p:99999"}}, "prometheus.url", "URL"),
    ("url query", {"prometheus": {"url": "http://p/?a=1"}}, "prometheus.url", "query"),
    ("timeout zero", with_prometheus(timeout="0s"), "prometheus.timeout", "between 1s and 5m"),
    ("verifyTls string", with_prometheus(verifyTls="false"), "prometheus.verifyTls", "true or"),
    ("relative caBundle", with_prometheus(caBundle="ca.pem"), "prometheus.caBundle", "absolute"),
    (
        "bearer and basic auth",
        with_prometheus(
            bearerTokenFile="/t", basicAuth={"username": "u", "passwordFile": "/p"}
        ),
        "prometheus.bearerTokenFile",
        "must not be set together with basicAuth",
    ),
    (
        "basicAuth without passwordFile",
        with_prometheus(basicAuth={"username": "u"}),
        "prometheus.basicAuth.passwordFile",
        "required key is missing",
    ),
    ("basicAuth not mapping", with_prometheus(basicAuth="u:p"), "prometheus.basicAuth", "mapping"),
    (
        "authorization header",
        with_prometheus(headers={"Authorization": "Bearer x"}),
        "prometheus.headers.Authorization",
        "Authorization, Proxy-Authorization and Cookie are not allowed",
    ),
    (
        "header value with newline",
        with_prometheus(headers={"X-Scope-OrgID": "a\r\nX-Evil: 1"}),
        "prometheus.headers.X-Scope-OrgID",
        "without line breaks",
    ),
    (
        "header value number",
        with_prometheus(headers={"X-Scope-OrgID": 5}),
        "prometheus.headers.X-Scope-OrgID",
        "to strings",
    ),
    # controller
    ("metricsPort zero", controller(metricsPort=0), "controller.metricsPort", "1 and 65535"),
    ("metricsPort string", controller(metricsPort="8080"), "controller.metricsPort", "integer"),
    ("leaseName", controller(leaseName="Lease!"), "controller.leaseName", "DNS-1123"),
    ("leaseNamespace", controller(leaseNamespace="a.b"), "controller.leaseNamespace", "label"),
    (
        "renewPeriod >= leaseDuration",
        {"controller": {"renewPeriod": "15s"}},
        "controller.renewPeriod",
        "must be less than leaseDuration (leaseDuration is 15s)",
    ),
    (
        "leaseDuration <= renewPeriod",
        {"controller": {"leaseDuration": "5s"}},
        "controller.leaseDuration",
        "must be greater than renewPeriod (renewPeriod is 5s)",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "path", "rule"),
    [pytest.param(data, path, rule, id=name) for name, data, path, rule in RULE_CASES],
)
def test_rule(data: object, path: str, rule: str) -> None:
    issues = issues_of(copy.deepcopy(data))
    matching = [issue for issue in issues if issue.path == path and rule in issue.rule]
    assert matching, f"no {rule!r} at {path!r}; got:\n" + "\n".join(map(str, issues))
    assert str(matching[0]).startswith(f"{path}: ")


def test_error_format_is_path_value_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_data({"targets": [{"hpa": HPA}, {"hpa": HPA}, one_target()["targets"][0]]})
    assert "targets[1].hpa: got 'llm/nim-llm': duplicate target" in str(caught.value)
    issue = issue_at({"targets": [{"hpa": HPA, "scaleDownStep": -1}]}, "targets[0].scaleDownStep")
    assert str(issue) == ("targets[0].scaleDownStep: got -1: must be an integer between 1 and 1000")
    missing = issue_at({"targets": [{}]}, "targets[0].hpa")
    assert missing.value is None
    assert str(missing) == "targets[0].hpa: required key is missing"


def test_unknown_key_lists_allowed_keys() -> None:
    issue = issue_at(with_defaults(warmUp="10m"), "defaults.warmUp")
    assert issue.rule.startswith("unknown key (did you mean 'warmup'?); allowed keys: interval,")
    assert "scaleDownStep" in issue.rule


def test_long_values_are_truncated() -> None:
    issue = issue_at(with_defaults(model="x" * 10_000), "defaults.model")
    assert issue.value is not None
    assert len(issue.value) <= 80
    assert issue.value.endswith("...")


def test_aliased_bomb_is_reported_quickly() -> None:
    bomb: list[Any] = ["lol"] * 10
    for _ in range(30):
        bomb = [bomb] * 10
    issue = issue_at(with_defaults(seasons=bomb), "defaults.seasons")
    assert issue.value is not None
    assert len(issue.value) <= 80


def test_all_issues_are_collected_in_one_pass() -> None:
    text = """
defaults:
  quantile: 2
  model: prophet
targets:
  - hpa: {namespace: llm, name: a}
    scaleDownStep: -1
    signals: [{name: rps, query: up}]
  - hpa: {namespace: llm, name: a}
prometheus: {url: "ftp://x"}
controller: {metricsPort: 0, colour: blue}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    paths = [issue.path for issue in caught.value.errors]
    assert paths == [
        "defaults.quantile",
        "defaults.model",
        "targets[0].signals[0].targetPerPod",
        "targets[0].scaleDownStep",
        "targets[1].hpa",
        "prometheus.url",
        "controller.colour",
        "controller.metricsPort",
    ]
    assert str(caught.value).count("\n") == len(paths) - 1


def test_cross_rule_inherited_from_defaults_is_reported_once() -> None:
    data = {
        "defaults": {"interval": "15m"},
        "targets": [{"hpa": HPA}, {"hpa": {**HPA, "name": "b"}}],
    }
    paths = [issue.path for issue in issues_of(data)]
    assert paths == ["defaults.interval"]


def test_invalid_defaults_do_not_cascade_into_targets() -> None:
    data = {"defaults": {"history": "bogus"}, **one_target(step="2h")}
    assert [issue.path for issue in issues_of(data)] == ["defaults.history", "targets[0].step"]


# --------------------------------------------------------------------------------------------
# Secrets stay out of errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"prometheus": {"url": "https://admin:s3cret@prom:9090"}}, "prometheus.url"),
        ({"prometheus": {"url": "ftp://admin:s3cret@prom"}}, "prometheus.url"),
        (with_prometheus(bearerTokenFile="eyJs3cret"), "prometheus.bearerTokenFile"),
        (with_prometheus(token="s3cret"), "prometheus.token"),
        (
            with_prometheus(
                basicAuth={"username": "u", "passwordFile": "/p", "password": "s3cret"}
            ),
            "prometheus.basicAuth.password",
        ),
        (
            with_prometheus(basicAuth={"username": "u", "passwordFile": "s3cret"}),
            "prometheus.basicAuth.passwordFile",
        ),
        (with_prometheus(headers={"X-Api-Key": "s3cret\n"}), "prometheus.headers.X-Api-Key"),
        (one_target(apiToken="s3cret"), "targets[0].apiToken"),
    ],
)
def test_secret_values_are_redacted(data: object, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_data(data)
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(caught.value.errors)
    assert issue_at(data, path).value == "<redacted>"


# --------------------------------------------------------------------------------------------
# YAML and files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "rule"),
    [
        ("targets: [\n  {hpa: x\n", "<yaml>", "invalid YAML at line 3, column 1"),
        ("a: b: c\n", "<yaml>", "invalid YAML at line 1, column 5"),
        ("\tdefaults: {}\n", "<yaml>", "invalid YAML at line 1"),
        ("a: 1\n---\nb: 2\n", "<yaml>", "invalid YAML"),
        ("x: !!python/object/apply:os.system ['echo pwned']\n", "<yaml>", "invalid YAML"),
        ("x: " + "[" * 5000 + "\n", "<yaml>", "nested too deeply"),
        ("", "<root>", "the configuration is empty"),
        ("# only a comment\n", "<root>", "the configuration is empty"),
        ("- hpa: {}\n", "<root>", "must be a mapping"),
        (
            "defaults:\n  warmup: 5m\n  warmup: 10m\n",
            "defaults.warmup",
            "duplicate key at line 3, column 3 (first at line 2)",
        ),
        (
            "targets:\n  - hpa: {namespace: a, name: b, name: c}\n",
            "targets[0].hpa.name",
            "duplicate key",
        ),
    ],
)
def test_yaml_problems(text: str, path: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    matching = [issue for issue in caught.value.errors if issue.path == path]
    assert matching, str(caught.value)
    assert rule in matching[0].rule


def test_duplicate_keys_are_reported_with_other_issues() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("defaults:\n  step: 1m\n  step: 2m\n  model: x\n")
    assert [issue.path for issue in caught.value.errors] == ["defaults.step", "defaults.model"]


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("targets:\n  - hpa: {namespace: llm, name: nim-llm}\n", encoding="utf-8")
    assert load_config_file(path).targets[0].id == "llm/nim-llm"
    assert load_config_file(str(path)) == load_config_file(path)


@pytest.mark.parametrize(
    ("setup", "rule"),
    [("missing", "cannot read: No such file"), ("dir", "cannot read"), ("latin1", "UTF-8")],
)
def test_load_config_file_unreadable(tmp_path: Path, setup: str, rule: str) -> None:
    path = tmp_path / "config.yaml"
    if setup == "dir":
        path.mkdir()
    elif setup == "latin1":
        path.write_bytes("defaults: {model: caf\u00e9}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    (issue,) = caught.value.errors
    assert issue.path == "<file>"
    assert rule in issue.rule


def test_config_error_pickles() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_data([])
    copy_ = pickle.loads(pickle.dumps(caught.value))
    assert copy_.errors == caught.value.errors
    assert str(copy_) == str(caught.value)


# --------------------------------------------------------------------------------------------
# Junk never raises anything but ConfigError
# --------------------------------------------------------------------------------------------

KNOWN_KEYS = sorted(
    {
        *("defaults", "targets", "prometheus", "controller", "hpa", "namespace", "name"),
        *("enabled", "selector", "signals", "preset", "query", "queueQuery", "runningQuery"),
        *("targetPerPod", "hpaMetric", "interval", "history", "step", "warmup", "quantile"),
        *("model", "seasons", "refitInterval", "scaleUpStep", "scaleDownDelay"),
        *("scaleDownStep", "missingDataHold", "staleAfter", "minHistory", "dryRun", "exclude"),
        *("start", "end", "reason", "url", "timeout", "bearerTokenFile", "basicAuth"),
        *("username", "passwordFile", "caBundle", "verifyTls", "headers", "metricsPort"),
        *("leaseName", "leaseNamespace", "leaseDuration", "renewPeriod"),
    }
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["30s", "1h30m", "0", "-1m", "nim", "vllm", "auto", "daily", "llm", "${x}"]),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.binary(max_size=5),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10), st.integers(), st.none())
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=6),
    ),
    max_leaves=40,
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "defaults": st.dictionaries(st.sampled_from(KNOWN_KEYS), junk, max_size=5),
        "targets": st.lists(
            st.dictionaries(
                st.sampled_from(KNOWN_KEYS),
                st.one_of(junk, st.just(HPA), st.just([{"preset": "nim"}])),
                max_size=6,
            ),
            max_size=3,
        ),
        "prometheus": st.dictionaries(st.sampled_from(KNOWN_KEYS), junk, max_size=5),
        "controller": st.dictionaries(st.sampled_from(KNOWN_KEYS), junk, max_size=5),
    },
)

JUNK_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_parses_or_config_error(data: object) -> None:
    try:
        config = parse_config_data(data)
    except ConfigError as exc:
        assert exc.errors
        for issue in exc.errors:
            assert issue.path
            assert issue.rule
            assert issue.value is None or len(issue.value) <= 80
    else:
        assert isinstance(config, Config)


@JUNK_SETTINGS
@given(junk)
def test_junk_data_only_raises_config_error(data: object) -> None:
    check_parses_or_config_error(data)


@JUNK_SETTINGS
@given(shaped)
def test_schema_shaped_junk_only_raises_config_error(data: object) -> None:
    check_parses_or_config_error(data)


@JUNK_SETTINGS
@given(st.text(max_size=300))
def test_junk_text_only_raises_config_error(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as exc:
        assert exc.errors


yaml_fragments = st.lists(
    st.sampled_from(
        [
            "defaults:", "targets:", "  - hpa: {namespace: llm, name: a}", "  warmup: 5m",
            "    scaleUpStep: 2", "  - ", "&a", "*a", "<<: *a", "[", "]", "{", "}", ": ",
            "!!binary AAA=", "!!python/name:os.system", "'", '"', "\t", "---", "...", "? ",
            "    signals: [{preset: vllm}]", "prometheus: {url: http://p}", "#", "|", ">",
        ]
    ),
    max_size=12,
)  # fmt: skip


@JUNK_SETTINGS
@given(yaml_fragments)
def test_yaml_shaped_junk_only_raises_config_error(lines: list[str]) -> None:
    try:
        parse_config("\n".join(lines))
    except ConfigError as exc:
        assert exc.errors


# --------------------------------------------------------------------------------------------
# Documentation stays in sync with validation
# --------------------------------------------------------------------------------------------


def test_docs_contain_generated_reference() -> None:
    assert render_reference() in DOCS.read_text(encoding="utf-8"), (
        "docs/configuration.md is out of date: paste the output of "
        "`python -c 'from predictive_scaler.config import render_reference as r; print(r())'`"
    )


def test_docs_examples_are_valid() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    for block in blocks:
        config = parse_config(block)
        assert config.targets


def test_reference_lists_every_rule_text() -> None:
    reference = render_reference()
    for rule in (
        "must be an integer between 1 and 1000",
        "must be a duration between 5s and 1h",
        "must be a number greater than 0.5 and less than 1",
        "`step` × 10 ≤ `history`",
        "`interval` ≤ `warmup`",
        "`renewPeriod` < `leaseDuration`",
    ):
        assert rule in reference


def test_targets_selecting_the_same_pods_are_flagged() -> None:
    # Issue 12 item 4: two targets summing the same pods each get the other's demand.
    same = {"app": "nim"}
    data = {
        "targets": [
            {"hpa": {"namespace": "llm", "name": "a"}, "selector": same},
            {"hpa": {"namespace": "llm", "name": "b"}, "selector": same},
            {"hpa": {"namespace": "other", "name": "c"}, "selector": same},  # other pods
            {"hpa": {"namespace": "llm", "name": "d"}},  # its scale target decides
            {"hpa": {"namespace": "llm", "name": "e"}},
        ]
    }
    with pytest.raises(ConfigError) as caught:
        parse_config_data(data)
    [issue] = caught.value.errors
    assert issue.path == "targets[1].selector"
    assert "pods overlap: targets[0] selects the same pods" in str(caught.value)
    del data["targets"][1]
    assert len(parse_config_data(data).targets) == 4


def test_floor_quantile_is_off_by_default_and_validated() -> None:
    doc = "targets:\n  - hpa: {namespace: ns, name: a}\n"
    assert parse_config(doc).targets[0].policy.floor_quantile == 0.0
    on = parse_config("defaults:\n  floorQuantile: 0.75\n" + doc)
    assert on.targets[0].policy.floor_quantile == 0.75
    for bad in ("2", "-0.1", "true", "high"):
        with pytest.raises(ConfigError) as caught:
            parse_config(f"defaults:\n  floorQuantile: {bad}\n" + doc)
        message = str(caught.value)
        assert "defaults.floorQuantile: got " in message, message
        assert "must be a number from 0 (off) to 0.99" in message, message
