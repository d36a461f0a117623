"""The configuration reference in docs/configuration.md, generated from the field tables that
validate, so the documentation cannot drift from the validation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from predictive_scaler.config.fields import (
    _BASIC_AUTH_FIELDS,
    _CONTROLLER_CROSS,
    _CONTROLLER_FIELDS,
    _HPA_FIELDS,
    _PROMETHEUS_FIELDS,
    _ROOT_FIELDS,
    _SIGNAL_FIELDS,
    _TARGET_FIELDS,
)
from predictive_scaler.config.policy import _POLICY_CROSS, _POLICY_FIELDS
from predictive_scaler.config.presets import SIGNAL_PRESETS
from predictive_scaler.config.schema import _doc_default, _Field
from predictive_scaler.signals import SIGNAL_KINDS


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(prefix: str, fields: Iterable[_Field[Any]]) -> list[str]:
    lines = ["| Key | Type | Default | Rule | Description |", "|---|---|---|---|---|"]
    for item in fields:
        key = f"`{prefix}{item.key}`"
        default = _doc_default(item) or "—"
        lines.append(
            f"| {key} | {_cell(item.kind)} | {_cell(default)} | {_cell(item.rule)} "
            f"| {_cell(item.doc)} |"
        )
    return lines


_GENERAL_RULES: Final = (
    "The document must be valid YAML (errors give line and column, path `<yaml>`) whose top "
    "level is a mapping; it is read with `yaml.safe_load`, values are never evaluated.",
    "Unknown keys are errors at every level; the error lists the allowed keys.",
    "A key given twice in one mapping is an error (YAML would silently keep the last one).",
    "Types are strict: `true`/`false` are not numbers, quoted numbers are not numbers (except "
    "durations), numbers are not strings (quote them), and integers must be written without "
    "a fraction.",
    "Durations are `30s`, `10m`, `6h`, `7d`, `1w`, `500ms` or combinations, largest unit "
    "first (`1h30m`), or a plain number of seconds.",
    "A target key from Policy overrides `defaults` for that target; lists (`seasons`, "
    "`exclude`) replace, they are not merged.",
    "Targets must be unique by HPA (`hpa.namespace`/`hpa.name`) and by id (`name`); signal "
    "names must be unique within a target. Two enabled targets in one namespace with the same "
    "`selector` would sum the same pods: an error on the second one's `selector` (without a "
    "`selector`, each target's pods come from its HPA's scale target).",
    "A signal needs the queries its `kind` requires, or a `preset` that fills them; a query key "
    "its kind does not read is an error; `queueQuery` needs `runningQuery`; `targetPerPod` "
    "and `hpaMetric` must not both be null.",
    "`prometheus.bearerTokenFile` and `prometheus.basicAuth` are exclusive, and so are "
    "`prometheus.caBundle` and `verifyTls: false`. Errors never show "
    "the values of `url`, `bearerTokenFile`, `passwordFile`, `headers`, nor of unknown keys "
    "under `prometheus`.",
    "A section key with an empty value (`defaults:`) means an empty section; an empty "
    "document is an error.",
    "All issues are reported at once, one per line: `path: got value: rule`.",
)


def _codes(keys: tuple[str, ...]) -> str:
    return ", ".join(f"`{key}`" for key in keys)


def render_reference() -> str:
    """The configuration reference (Markdown), generated from the validation metadata."""
    lines: list[str] = [
        "### Top level",
        "",
        *_table("", _ROOT_FIELDS),
        "",
        "### Policy: `defaults.*`, and per target `targets[].*`",
        "",
        *_table("", _POLICY_FIELDS),
        "",
        "### Targets: `targets[]`",
        "",
        *_table("", _TARGET_FIELDS),
        *_table("hpa.", _HPA_FIELDS)[2:],
        "",
        "### Signals: `targets[].signals[]`",
        "",
        "Without `signals`, a target has one signal: `{name: kv_cache, preset: nim}`.",
        "",
        *_table("", _SIGNAL_FIELDS),
        "",
        "### Signal kinds",
        "",
        "A signal's `kind` says which of its query keys it reads and how their answers become "
        "demand; a preset fills only the keys of its kind listed here.",
        "",
        "| Kind | Reads | Required | Preset fills | Demand |",
        "|---|---|---|---|---|",
        *(
            f"| `{kind.name}` | {_codes(kind.keys)} | {_codes(kind.required)} "
            f"| {_codes(kind.preset_keys)} | {kind.summary} |"
            for kind in SIGNAL_KINDS.values()
        ),
        "",
        "### Presets",
        "",
        "| Preset | query | queueQuery | runningQuery | hpaMetric |",
        "|---|---|---|---|---|",
        *(
            f"| `{name}` | `{values['query']}` | `{values['queueQuery']}` "
            f"| `{values['runningQuery']}` | `{values['hpaMetric']}` |"
            for name, values in SIGNAL_PRESETS.items()
        ),
        "",
        "### Prometheus: `prometheus`",
        "",
        *_table("", _PROMETHEUS_FIELDS),
        *_table("basicAuth.", _BASIC_AUTH_FIELDS)[2:],
        "",
        "### Controller: `controller`",
        "",
        *_table("", _CONTROLLER_FIELDS),
        "",
        "### Rules between keys",
        "",
        "Checked on the effective values (defaults plus the target's overrides) and reported on "
        "the key set at that level.",
        "",
        *(f"- {rule.doc}" for rule in _POLICY_CROSS),
        *(f"- `controller`: {rule.doc}" for rule in _CONTROLLER_CROSS),
        "",
        "### General rules",
        "",
        *(f"- {rule}" for rule in _GENERAL_RULES),
        "",
    ]
    return "\n".join(lines)
