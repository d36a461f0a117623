"""The published JSON Schema of config.yaml: generated from config.py's field tables, and in
agreement with the validation itself (what config.py rejects for a single-field reason, the
schema rejects too; what the repo ships as a valid config, the schema accepts)."""

from __future__ import annotations

import copy
import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from predictive_scaler.cli import main
from predictive_scaler.config import ConfigError, parse_config, parse_config_data
from predictive_scaler.config_schema import SCHEMA_ID

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "deploy" / "config.schema.json"
MODELINE = "# yaml-language-server: $schema="


def config_schema_from_cli(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["config-schema"]) == 0
    out = capsys.readouterr().out
    loaded: dict[str, Any] = json.loads(out)
    return loaded


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def as_editor_sees(data: Any) -> Any:
    """YAML data as an editor's JSON view has it: timestamps are strings, not datetimes."""
    if isinstance(data, dict):
        return {key: as_editor_sees(value) for key, value in data.items()}
    if isinstance(data, list):
        return [as_editor_sees(item) for item in data]
    if isinstance(data, datetime | date):
        return data.isoformat()
    return data


def schema_errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(as_editor_sees(data))
    ]


# --------------------------------------------------------------------------------------------
# The published file cannot drift from the generator
# --------------------------------------------------------------------------------------------


def test_published_schema_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    generated = config_schema_from_cli(capsys)
    assert PUBLISHED.exists(), f"{PUBLISHED} is missing: predictive-scaler config-schema > it"
    published = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    assert published == generated, (
        "deploy/config.schema.json is out of date: "
        "`predictive-scaler config-schema > deploy/config.schema.json`"
    )


def test_schema_is_draft_2020_12_and_closed(capsys: pytest.CaptureFixture[str]) -> None:
    schema = config_schema_from_cli(capsys)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)

    def closed(node: Any, where: str) -> None:
        if isinstance(node, dict):
            types = node.get("type") or []
            if "properties" in node and (types == "object" or "object" in types):
                assert node.get("additionalProperties") is False, where
            for key, value in node.items():
                closed(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                closed(value, f"{where}/{index}")

    closed(schema, "#")
    policy = schema["$defs"]["policy"]["properties"]
    assert policy["scaleUpStep"]["minimum"] == 1
    assert policy["scaleUpStep"]["maximum"] == 1000
    assert policy["scaleUpStep"]["default"] == 4
    assert policy["interval"]["default"] == "30s"
    assert "auto" in policy["model"]["enum"]
    assert "Cycle period" in policy["interval"]["description"]
    assert "step` × 10 ≤ `history" in schema["description"]


# --------------------------------------------------------------------------------------------
# Every config the repo ships validates
# --------------------------------------------------------------------------------------------


def shipped_configs() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for manifest in sorted((ROOT / "deploy").rglob("*.yaml")):
        for document in yaml.safe_load_all(manifest.read_text(encoding="utf-8")):
            if isinstance(document, dict) and document.get("kind") == "ConfigMap":
                text = (document.get("data") or {}).get("config.yaml")
                if text:
                    found.append((str(manifest.relative_to(ROOT)), text))
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, flags=re.S)):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and "targets" in data and "apiVersion" not in data:
                found.append((f"{doc.relative_to(ROOT)}[{index}]", block))
    return found


def test_shipped_configs_are_found() -> None:
    names = [name for name, _ in shipped_configs()]
    assert "deploy/base/configmap.yaml" in names
    assert any(name.startswith("docs/configuration.md") for name in names)


@pytest.mark.parametrize(("name", "text"), shipped_configs(), ids=lambda value: str(value)[:40])
def test_shipped_config_validates(
    validator: jsonschema.Draft202012Validator, name: str, text: str
) -> None:
    parse_config(text)  # config.py accepts it ...
    errors = schema_errors(validator, yaml.safe_load(text))
    assert not errors, f"{name}: " + "; ".join(errors)  # ... and so does the schema


def test_docs_config_examples_start_with_the_modeline() -> None:
    docs = [(name, text) for name, text in shipped_configs() if name.startswith("docs/")]
    assert docs
    for name, text in docs:
        assert text.startswith(MODELINE + SCHEMA_ID + "\n"), f"{name}: {text[:80]!r}"


# --------------------------------------------------------------------------------------------
# Schema and config.py agree, field by field
# --------------------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "defaults": {"interval": "30s", "model": "auto", "seasons": ["daily"]},
    "targets": [
        {
            "hpa": {"namespace": "llm", "name": "nim-llm"},
            "name": "llm/chat",
            "selector": {"app": "nim-llm"},
            "exclude": [{"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z"}],
            "signals": [
                {"preset": "nim"},
                {"name": "rps", "query": "sum(rate(x{${matchers}}[5m]))", "targetPerPod": 4},
            ],
        }
    ],
    "prometheus": {
        "url": "http://prometheus:9090",
        "timeout": "10s",
        "headers": {"X-Scope-OrgID": "tenant"},
        "basicAuth": {"username": "u", "passwordFile": "/etc/pw"},
    },
    "controller": {"metricsPort": 8080, "leaseNamespace": None, "hpaWatch": "cluster"},
}


def edited(path: str, value: Any) -> dict[str, Any]:
    """BASE with the key at dotted ``path`` (``targets.0.hpa.name``) set to ``value``."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


INVALID: list[tuple[str, Any]] = [
    # wrong type
    ("defaults.interval", True),
    ("defaults.quantile", "0.9"),
    ("defaults.scaleUpStep", "4"),
    ("defaults.dryRun", "yes"),
    ("defaults.seasons", "daily"),
    ("targets.0.enabled", 1),
    ("targets.0.hpa", "llm/nim-llm"),
    ("targets.0.signals.1.targetPerPod", True),
    ("targets", {"hpa": {}}),
    ("defaults", []),
    ("controller.metricsPort", "8080"),
    ("prometheus.headers", ["X-Scope-OrgID"]),
    # unknown key, at every level
    ("defaults.intervall", "30s"),
    ("targets.0.hpaa", {}),
    ("targets.0.hpa.kind", "HorizontalPodAutoscaler"),
    ("targets.0.signals.1.queryy", "x"),
    ("targets.0.exclude.0.why", "x"),
    ("prometheus.token", "x"),
    ("prometheus.basicAuth.password", "x"),
    ("controller.port", 1),
    ("extra", {}),
    # out of range
    ("defaults.scaleUpStep", 0),
    ("defaults.scaleDownStep", 1001),
    ("defaults.quantile", 0.5),
    ("defaults.quantile", 1),
    ("defaults.interval", 4),
    ("defaults.history", 91 * 86400),
    ("targets.0.signals.1.targetPerPod", 0),
    ("controller.metricsPort", 70000),
    ("prometheus.timeout", 0.5),
    ("targets.0.signals", []),
    # bad duration
    ("defaults.interval", "30"),  # valid: plain seconds; replaced below by the invalid ones
    ("defaults.interval", "30 s"),
    ("defaults.warmup", "10min"),
    ("defaults.history", "30m1h"),
    ("defaults.step", "1m1m"),
    ("defaults.staleAfter", "-5m"),
    ("defaults.refitInterval", ""),
    # bad enum / pattern
    ("defaults.model", "prophet"),
    ("defaults.seasons", ["hourly"]),
    ("defaults.seasons", ["daily", "daily"]),
    ("targets.0.signals.0.preset", "triton"),
    ("controller.hpaWatch", "all"),
    ("targets.0.hpa.namespace", "LLM"),
    ("targets.0.hpa.name", "-nim"),
    ("targets.0.name", "/chat"),
    ("targets.0.signals.1.name", "Rps"),
    ("targets.0.signals.1.query", "sum(x{$matchers})"),
    ("targets.0.signals.1.query", "  "),
    ("targets.0.selector", {"namespace": "x"}),
    ("targets.0.selector", {"app": ""}),
    ("prometheus.url", "ftp://prometheus:9090"),
    ("prometheus.url", "http://user:pw@prometheus:9090"),
    ("prometheus.headers", {"Authorization": "Bearer x"}),
    ("prometheus.headers", {"cookie": "x"}),
    ("prometheus.bearerTokenFile", "token"),
    ("prometheus.basicAuth", {"username": "u"}),
    ("targets.0.exclude", [{"start": "2024-01-01T00:00:00Z"}]),
    ("targets.0.hpa", {"namespace": "llm"}),
]
INVALID = [case for case in INVALID if case != ("defaults.interval", "30")]


def test_base_is_valid_for_both(validator: jsonschema.Draft202012Validator) -> None:
    parse_config_data(BASE)
    assert not schema_errors(validator, BASE)


@pytest.mark.parametrize(("path", "value"), INVALID, ids=lambda value: repr(value)[:40])
def test_what_config_rejects_the_schema_rejects(
    validator: jsonschema.Draft202012Validator, path: str, value: Any
) -> None:
    data = edited(path, value)
    with pytest.raises(ConfigError):
        parse_config_data(data)
    errors = schema_errors(validator, data)
    assert errors, f"the schema accepts {path} = {value!r}"
    # Rejected for this key (or, for an unknown key, on its mapping), not for another.
    here = path.replace(".", "/")
    parent = here.rpartition("/")[0]
    where = [error.split(": ")[0] for error in errors]
    assert any(at in (parent, here) or at.startswith(here + "/") for at in where), errors


VALID_EDITS: list[tuple[str, Any]] = [
    ("defaults.interval", 30),
    ("defaults.interval", "30"),
    ("defaults.interval", 12.5),
    ("defaults.history", "1w2d3h"),
    ("defaults.warmup", "1h30m"),
    ("defaults.scaleDownDelay", 0),
    ("defaults.scaleDownDelay", "0s"),
    ("defaults.quantile", 0.95),
    ("defaults.seasons", []),
    ("defaults", None),
    ("targets", None),
    ("controller", None),
    ("prometheus.basicAuth", None),
    ("targets.0.signals.1.targetPerPod", None),
    ("targets.0.signals.1.query", "sum(x) * $$1 + sum(y{${matchers}})"),
    ("targets.0.exclude.0.reason", "load test"),
    ("controller.hpaWatch", "off"),
    ("controller.hpaWatch", False),  # YAML 1.1's bare off
]


@pytest.mark.parametrize(("path", "value"), VALID_EDITS, ids=lambda value: repr(value)[:40])
def test_what_config_accepts_the_schema_accepts(
    validator: jsonschema.Draft202012Validator, path: str, value: Any
) -> None:
    data = edited(path, value)
    if path == "targets.0.signals.1.targetPerPod":
        data["targets"][0]["signals"][1]["hpaMetric"] = "requests_per_second"
    parse_config_data(data)
    assert not schema_errors(validator, data)
