"""Validated configuration: the ``config.yaml`` key of the ConfigMap, or a file.

A pure data layer: parsing and validation only compute, they do no I/O (the single exception is
:func:`load_config_file`), never log, and never evaluate a value (``yaml.safe_load`` only).
Errors are collected in one pass: :class:`ConfigError` carries every :class:`ConfigIssue` found,
each naming the path (``targets[2].scaleDownStep``), the offending value and the rule it broke.

One responsibility a module, lowest first:

- ``errors``: :class:`ConfigIssue`, :class:`ConfigError` and the issue collector;
- ``durations``: :func:`parse_duration` and :func:`format_duration`;
- ``schema``: the field metadata (``_Field``), field constructors, rules between keys, and the
  checks every section shares;
- ``presets``: the signal presets (NIM, vLLM) and the HPA metric aliases;
- ``fields``: the field tables of signals, targets, Prometheus, the controller and the top level;
- ``policy``: a target's policy: its field table (the one source of the policy's defaults), its
  rules between keys, and :class:`Policy`;
- ``values``: the other validated values (:class:`Signal`, :class:`Target`,
  :class:`PrometheusConfig`, :class:`ControllerConfig`, :class:`Config`);
- ``loader``: YAML text or a file into a :class:`Config`;
- ``reference``: the reference in docs/configuration.md (:func:`render_reference`);
- ``json_schema``: the JSON Schema published as deploy/config.schema.json.

The names below are the public surface; the modules' underscored names are the package's own.
"""

from predictive_scaler.config.durations import format_duration, parse_duration
from predictive_scaler.config.errors import ConfigError, ConfigIssue
from predictive_scaler.config.loader import load_config_file, parse_config, parse_config_data
from predictive_scaler.config.policy import MODELS, SEASONS, Exclusion, Policy
from predictive_scaler.config.presets import (
    HPA_METRIC_ALIASES,
    MATCHERS_PLACEHOLDER,
    SIGNAL_PRESETS,
)
from predictive_scaler.config.reference import render_reference
from predictive_scaler.config.values import (
    DEFAULT_SIGNALS,
    BasicAuth,
    Config,
    ControllerConfig,
    PrometheusConfig,
    Signal,
    Target,
)

__all__ = [
    "DEFAULT_SIGNALS",
    "HPA_METRIC_ALIASES",
    "MATCHERS_PLACEHOLDER",
    "MODELS",
    "SEASONS",
    "SIGNAL_PRESETS",
    "BasicAuth",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ControllerConfig",
    "Exclusion",
    "Policy",
    "PrometheusConfig",
    "Signal",
    "Target",
    "format_duration",
    "load_config_file",
    "parse_config",
    "parse_config_data",
    "parse_duration",
    "render_reference",
]
