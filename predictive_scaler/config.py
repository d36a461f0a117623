"""Validated configuration: the ``config.yaml`` key of the ConfigMap, or a file.

A pure data layer: parsing and validation only compute, they do no I/O (the single exception is
:func:`load_config_file`), never log, and never evaluate a value (``yaml.safe_load`` only).

One table of field metadata (:class:`_Field`) drives three things: which keys are allowed, how
each value is checked (the rule text in every error), and the reference in
``docs/configuration.md`` (:func:`render_reference`), so the documentation cannot drift from the
validation.

Errors are collected in one pass: :class:`ConfigError` carries every :class:`ConfigIssue` found,
each naming the path (``targets[2].scaleDownStep``), the offending value and the rule it broke.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

import yaml

from models import MODEL_NAMES

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

T = TypeVar("T")

MODELS: Final = ("auto", *(name for name in MODEL_NAMES if name != "auto"))
"""Model names accepted by ``model``: the forecasting registry's, ``auto`` first."""

SEASONS: Final = ("daily", "weekly")
"""Season names accepted by ``seasons``, in canonical order."""

_SEASONAL_MODELS: Final = ("seasonal_naive", "mstl")
"""Models that cannot work without at least one season."""

MATCHERS_PLACEHOLDER: Final = "${matchers}"
"""The one placeholder a query may contain; replaced by the target's label matchers."""

SIGNAL_PRESETS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "nim": MappingProxyType(
            {
                "query": "sum(gpu_cache_usage_perc{${matchers}})",
                "queueQuery": "sum(num_requests_waiting{${matchers}})",
                "runningQuery": "sum(num_requests_running{${matchers}})",
                "hpaMetric": "gpu_cache_usage_perc",
            }
        ),
        # vLLM renamed its KV-cache gauge (gpu_ -> kv_cache_usage_perc); one `or` reads
        # either, and a pod exporting both counts once (`or` matches on labels, not names).
        "vllm": MappingProxyType(
            {
                "query": "sum(vllm:gpu_cache_usage_perc{${matchers}}"
                " or vllm:kv_cache_usage_perc{${matchers}})",
                "queueQuery": "sum(vllm:num_requests_waiting{${matchers}})",
                "runningQuery": "sum(vllm:num_requests_running{${matchers}})",
                "hpaMetric": "vllm_kv_cache_usage_perc",
            }
        ),
    }
)
"""Signal presets (YAML keys): a signal with ``preset: nim`` gets these, explicit keys win."""

_VLLM_KV_CACHE_NAMES: Final = (
    "vllm_kv_cache_usage_perc",  # deploy/prometheus-adapter's vLLM rule
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
)
HPA_METRIC_ALIASES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {name: _VLLM_KV_CACHE_NAMES for name in _VLLM_KV_CACHE_NAMES}
)
"""Names an HPA may give the same per-pod metric: an ``hpaMetric`` of one of them finds the
HPA's target under any (vLLM's two gauge names, and the adapter rule's name for both)."""

_DEFAULT_SIGNAL_NAME: Final = "kv_cache"
_DEFAULT_PRESET: Final = "nim"

_MAX_REPR: Final = 80
_REDACTED: Final = "<redacted>"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One broken rule: where, what was found, and what was expected."""

    path: str
    """Where the value sits, e.g. ``targets[2].scaleDownStep``; ``<yaml>``, ``<file>`` or
    ``<root>`` for problems with the document itself."""

    value: str | None
    """A short ``repr`` of the offending value (at most ~80 characters, secrets redacted);
    ``None`` when the value is missing."""

    rule: str
    """The rule that was broken, e.g. ``must be an integer between 1 and 1000``."""

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.path}: {self.rule}"
        return f"{self.path}: got {self.value}: {self.rule}"


class ConfigError(ValueError):
    """The configuration is invalid; :attr:`errors` lists every issue found, in document order."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        self.errors: list[ConfigIssue] = list(errors)
        super().__init__("\n".join(str(issue) for issue in self.errors))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigIssue]]]:
        return (ConfigError, (self.errors,))


class _Invalid(Exception):
    """Raised by a field parser: the value breaks the field's rule (or issues were recorded)."""

    def __init__(self, rule: str | None = None) -> None:
        super().__init__(rule)
        self.rule = rule
        """The rule broken; ``None`` when the parser already recorded detailed issues."""


class _Ctx:
    """Collects issues during one validation pass."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []

    def add(self, path: str, value: object, rule: str, *, secret: bool = False) -> None:
        shown = _REDACTED if secret else _short_repr(value)
        self.issues.append(ConfigIssue(path=path, value=shown, rule=rule))

    def missing(self, path: str, rule: str = "required key is missing") -> None:
        self.issues.append(ConfigIssue(path=path, value=None, rule=rule))


def _short_repr(value: object, limit: int = _MAX_REPR) -> str:
    """A ``repr`` bounded in time and length, even for huge or aliased nested YAML values."""
    out: list[str] = []
    budget = [limit + 1]

    def emit(text: str) -> bool:
        if budget[0] <= 0:
            return False
        out.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(item: object) -> bool:
        if isinstance(item, Mapping):
            if not emit("{"):
                return False
            for index, (key, sub) in enumerate(item.items()):
                if (index and not emit(", ")) or not walk(key) or not emit(": "):
                    return False
                if not walk(sub):
                    return False
            return emit("}")
        if isinstance(item, list | tuple):
            if not emit("["):
                return False
            for index, sub in enumerate(item):
                if (index and not emit(", ")) or not walk(sub):
                    return False
            return emit("]")
        if isinstance(item, datetime | date):
            return emit(repr(item.isoformat()))
        if isinstance(item, str):
            return emit(repr(item[: limit + 1]))
        if isinstance(item, bool | int | float) or item is None:
            text = repr(item) if not isinstance(item, int) or item.bit_length() < 256 else "<int>"
            return emit(text)
        return emit(f"<{type(item).__name__}>")

    walk(value)
    text = "".join(out)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------

_DURATION_UNITS: Final = {
    "w": 604800.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
_DURATION_RANK: Final = {unit: rank for rank, unit in enumerate(_DURATION_UNITS)}
_DURATION_RE: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|w|d|h|m|s))+")
_DURATION_PART_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|w|d|h|m|s)")
_NUMBER_RE: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MAX_DURATION_SECONDS: Final = 100 * 365 * 86400.0


def parse_duration(text: str | float, *, allow_zero: bool = False) -> float:
    """Parse ``30s``, ``10m``, ``6h``, ``7d``, ``1w``, ``1h30m``, ``500ms`` or a plain number of
    seconds (``90``, ``"90"``, ``1.5``) into float seconds.

    Units must appear largest first, each at most once (``1h30m``, not ``30m1h``). Rejects
    booleans, negatives, non-finite numbers, zero (unless ``allow_zero``), values above 100
    years and anything else with :class:`ValueError`.
    """
    if isinstance(text, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(text, int | float):
        if not -_MAX_DURATION_SECONDS <= text <= _MAX_DURATION_SECONDS:
            raise ValueError("duration out of range")
        seconds = float(text)
    elif isinstance(text, str):
        stripped = text.strip()
        if len(stripped) > 64:
            raise ValueError("duration text too long")
        if stripped.startswith("-"):
            raise ValueError("duration must not be negative")
        if _NUMBER_RE.fullmatch(stripped):
            seconds = float(stripped)
        elif _DURATION_RE.fullmatch(stripped):
            seconds = 0.0
            last_rank = -1
            for number, unit in _DURATION_PART_RE.findall(stripped):
                rank = _DURATION_RANK[unit]
                if rank <= last_rank:
                    raise ValueError("duration units must be in decreasing order, each once")
                last_rank = rank
                seconds += float(number) * _DURATION_UNITS[unit]
        else:
            raise ValueError(f"not a duration: {_short_repr(text)}")
    else:
        raise ValueError(f"not a duration: {_short_repr(text)}")
    if not math.isfinite(seconds) or seconds > _MAX_DURATION_SECONDS:
        raise ValueError("duration out of range")
    if seconds < 0:
        raise ValueError("duration must not be negative")
    if seconds == 0 and not allow_zero:
        raise ValueError("duration must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way the configuration writes them: ``90d``, ``1h30m``, ``0.5s``."""
    if seconds == 0:
        return "0s"
    whole = int(seconds)
    fraction = seconds - whole
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    if whole or fraction:
        parts.append(f"{whole + fraction:g}s" if fraction else f"{whole}s")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Field metadata: one table drives key checks, value checks and the reference docs
# --------------------------------------------------------------------------------------------


Parser = Callable[[object, _Ctx, str], T]


@dataclass(frozen=True)
class _Field(Generic[T]):
    """Metadata of one YAML key: its check, its default and its documentation."""

    key: str
    """YAML key (camelCase)."""
    kind: str
    """Type as documented (``duration``, ``integer``...)."""
    default: T
    """Python default value (unused when ``required``)."""
    rule: str
    """Rule text, as it appears in errors and in the reference."""
    doc: str
    """Description for the reference."""
    parse: Parser[T] | None
    """Checks and converts a raw value; raises :class:`_Invalid`. ``None`` for sections."""
    attr: str = ""
    """Python attribute name (snake_case)."""
    default_doc: str | None = None
    """Default as documented; derived from ``default`` when ``None``."""
    required: bool = False
    secret: bool = False
    """Redact the value in errors."""
    bounds: tuple[float, float] | None = None
    """Inclusive range the parser enforces (durations in seconds); read by ``config_schema``."""
    choices: tuple[str, ...] = ()
    """Values the parser accepts, when it is a choice; read by ``config_schema``."""


def _doc_default(item: _Field[Any]) -> str:
    if item.required:
        return "required"
    if item.default_doc is not None:
        return item.default_doc
    value = item.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if item.kind == "duration" and isinstance(value, float):
        return f"`{format_duration(value)}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(str(sub) for sub in value) + "]`"
    return f"`{value}`"


def _range_text(low: float, high: float, fmt: Callable[[float], str]) -> str:
    return f"between {fmt(low)} and {fmt(high)}"


def _duration_field(
    key: str, attr: str, default: str, bounds: tuple[float, float], doc: str
) -> _Field[float]:
    """A duration in ``[low, high]`` seconds (``low == 0`` allows zero)."""
    low, high = bounds
    rule = f"must be a duration {_range_text(low, high, format_duration)} (e.g. 30s, 10m, 1h30m)"

    def parse(value: object, ctx: _Ctx, path: str) -> float:
        if not isinstance(value, str | int | float):
            raise _Invalid(rule)
        try:
            seconds = parse_duration(value, allow_zero=low == 0)
        except ValueError:
            raise _Invalid(rule) from None
        if not low <= seconds <= high:
            raise _Invalid(rule)
        return seconds

    return _Field(
        key,
        "duration",
        parse_duration(default, allow_zero=True),
        rule,
        doc,
        parse,
        attr,
        bounds=(low, high),
    )


def _integer_field(
    key: str, attr: str, default: int, bounds: tuple[int, int], doc: str
) -> _Field[int]:
    low, high = bounds
    rule = f"must be an integer {_range_text(low, high, str)}"

    def parse(value: object, ctx: _Ctx, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid(rule)
        return value

    return _Field(key, "integer", default, rule, doc, parse, attr, bounds=(low, high))


def _boolean_field(key: str, attr: str, default: bool, doc: str) -> _Field[bool]:
    rule = "must be true or false"

    def parse(value: object, ctx: _Ctx, path: str) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(rule)
        return value

    return _Field(key, "boolean", default, rule, doc, parse, attr)


def _choice_field(
    key: str, attr: str, default: str, choices: Sequence[str], doc: str
) -> _Field[str]:
    rule = "must be one of: " + ", ".join(choices)

    def parse(value: object, ctx: _Ctx, path: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Invalid(rule)
        return value

    return _Field(key, "string", default, rule, doc, parse, attr, choices=tuple(choices))


def _pattern_parser(pattern: re.Pattern[str], max_len: int, rule: str) -> Parser[str]:
    def parse(value: object, ctx: _Ctx, path: str) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            raise _Invalid(rule)
        if not pattern.fullmatch(value):
            raise _Invalid(rule)
        return value

    return parse


def _nullable(parse: Parser[str]) -> Parser[str | None]:
    def wrapped(value: object, ctx: _Ctx, path: str) -> str | None:
        return None if value is None else parse(value, ctx, path)

    return wrapped


def _section(key: str, kind: str, rule: str, doc: str, *, required: bool = False) -> _Field[None]:
    """A nested mapping or list parsed by its own code; listed for key checks and docs."""
    return _Field(key, kind, None, rule, doc, None, required=required, default_doc="")


_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN_RE: Final = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)
_DNS_LABEL_RULE: Final = (
    "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', "
    "starting and ending with a letter or digit"
)
_DNS_SUBDOMAIN_RULE: Final = (
    "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit"
)
_LABEL_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:.\-/]*")
_SIGNAL_NAME_RE: Final = re.compile(r"[a-z0-9_]+")
_TARGET_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]*")
_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+")
_PLACEHOLDER_RE: Final = re.compile(r"\$(?:\$|\{([^}]*)\}?|([A-Za-z_][A-Za-z0-9_]*)|)")
_FORBIDDEN_HEADERS: Final = ("authorization", "proxy-authorization", "cookie")
_MAX_QUERY_LEN: Final = 10000
_MAX_TEXT_LEN: Final = 1024
_MAX_PATH_LEN: Final = 4096


def _is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and _DNS_SUBDOMAIN_RE.fullmatch(value) is not None


def _parse_dns_subdomain(value: object, ctx: _Ctx, path: str) -> str:
    if not isinstance(value, str) or not value or not _is_dns_subdomain(value):
        raise _Invalid(_DNS_SUBDOMAIN_RULE)
    return value


_QUERY_RULE: Final = (
    f"must be a non-empty PromQL string (at most {_MAX_QUERY_LEN} characters) whose only "
    "placeholder is ${matchers} (write $$ for a literal $)"
)


def _parse_query(value: object, ctx: _Ctx, path: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_QUERY_LEN:
        raise _Invalid(_QUERY_RULE)
    for match in _PLACEHOLDER_RE.finditer(value):
        if match.group(0) not in ("$$", MATCHERS_PLACEHOLDER):
            raise _Invalid(_QUERY_RULE)
    return value


# ---- exclusions ------------------------------------------------------------------------------

_DATETIME_RULE: Final = "must be an ISO-8601 date-time with a timezone, e.g. 2024-12-24T18:00:00Z"


def _parse_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Invalid(_DATETIME_RULE) from None
    else:
        raise _Invalid(_DATETIME_RULE)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _Invalid(_DATETIME_RULE)
    return moment.astimezone(UTC)


_EXCLUSION_KEYS: Final = ("start", "end", "reason")
_EXCLUDE_RULE: Final = (
    "must be a list of {start, end, reason} with ISO-8601 date-times with a timezone "
    "and start < end"
)


def _parse_exclusions(value: object, ctx: _Ctx, path: str) -> tuple[Exclusion, ...]:
    if not isinstance(value, list | tuple):
        raise _Invalid(_EXCLUDE_RULE)
    result: list[Exclusion] = []
    ok = True
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            ctx.add(item_path, item, "must be a mapping with keys: start, end, reason")
            ok = False
            continue
        ok = _check_keys(item, item_path, _EXCLUSION_KEYS, ctx) and ok
        moments: dict[str, datetime] = {}
        for key in ("start", "end"):
            if key not in item:
                ctx.missing(f"{item_path}.{key}")
                ok = False
                continue
            try:
                moments[key] = _parse_datetime(item[key])
            except _Invalid as exc:
                ctx.add(f"{item_path}.{key}", item[key], exc.rule or _DATETIME_RULE)
                ok = False
        reason = item.get("reason", "")
        if not isinstance(reason, str) or len(reason) > _MAX_TEXT_LEN:
            ctx.add(
                f"{item_path}.reason",
                reason,
                f"must be a string of at most {_MAX_TEXT_LEN} characters",
            )
            ok = False
            reason = ""
        if len(moments) == 2:
            if moments["start"] >= moments["end"]:
                ctx.add(f"{item_path}.end", item["end"], "must be later than start")
                ok = False
            else:
                result.append(Exclusion(moments["start"], moments["end"], reason))
    if not ok:
        raise _Invalid(None)
    return tuple(result)


_SEASONS_RULE: Final = "must be a list of distinct values from: " + ", ".join(SEASONS)


def _parse_seasons(value: object, ctx: _Ctx, path: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > len(SEASONS):
        raise _Invalid(_SEASONS_RULE)
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or item not in SEASONS or item in seen:
            raise _Invalid(_SEASONS_RULE)
        seen.add(item)
    return tuple(season for season in SEASONS if season in seen)


# ---- policy: defaults and per-target overrides -------------------------------------------------

_INTERVAL = _duration_field(
    "interval",
    "interval_seconds",
    "30s",
    (5, 3600),
    "Cycle period: how often each target is decided.",
)
_HISTORY = _duration_field(
    "history",
    "history_seconds",
    "7d",
    (3600, 90 * 86400),
    "History read from Prometheus to fit the model.",
)
_STEP = _duration_field(
    "step", "step_seconds", "1m", (1, 3600), "Resolution (step) of the Prometheus range query."
)
_WARMUP = _duration_field(
    "warmup",
    "warmup_seconds",
    "10m",
    (1, 7200),
    "Time from pod creation to serving (node, image, weights into GPU memory). The forecast "
    "horizon is warmup + interval.",
)
_QUANTILE_RULE: Final = "must be a number greater than 0.5 and less than 1"


def _parse_quantile(value: object, ctx: _Ctx, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 < value < 1:
        raise _Invalid(_QUANTILE_RULE)
    return float(value)


_QUANTILE: _Field[float] = _Field(
    "quantile",
    "number",
    0.9,
    _QUANTILE_RULE,
    "Upper quantile of the forecast used for capacity; its maximum over the horizon counts.",
    _parse_quantile,
    "quantile",
)
_FLOOR_QUANTILE_RULE: Final = "must be a number from 0 (off) to 0.99"


def _parse_floor_quantile(value: object, ctx: _Ctx, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 0.99:
        raise _Invalid(_FLOOR_QUANTILE_RULE)
    return float(value)


_FLOOR_QUANTILE: _Field[float] = _Field(
    "floorQuantile",
    "number",
    0.0,
    _FLOOR_QUANTILE_RULE,
    "History floor: capacity never goes below this quantile of the demand in the history the "
    "model was fitted on (learned at each refit). 0 turns it off. Helps a steady workload "
    "whose demand returns after lulls faster than a forecast follows; costs GPU-hours on "
    "a bursty one (docs/benchmarks.md).",
    _parse_floor_quantile,
    "floor_quantile",
)
_MODEL = _choice_field(
    "model",
    "model",
    "auto",
    MODELS,
    "Forecast model; `auto` picks one per target by rolling-origin backtest.",
)
_SEASONS_FIELD: _Field[tuple[str, ...]] = _Field(
    "seasons",
    "list of strings",
    SEASONS,
    _SEASONS_RULE,
    "Seasonalities the models may use.",
    _parse_seasons,
    "seasons",
)
_REFIT = _duration_field(
    "refitInterval",
    "refit_interval_seconds",
    "6h",
    (60, 7 * 86400),
    "How often the model is refitted; in between it is only updated.",
)
_SCALE_UP_STEP = _integer_field(
    "scaleUpStep",
    "scale_up_step",
    4,
    (1, 1000),
    "Largest raise of minReplicas per cycle, counted from the larger of the running replicas "
    "and minReplicas (the only brake on a wrong forecast: the HPA jumps straight to a raised "
    "minimum).",
)
_SCALE_DOWN_DELAY = _duration_field(
    "scaleDownDelay",
    "scale_down_delay_seconds",
    "10m",
    (0, 86400),
    "How long the forecast must stay lower before minReplicas is lowered.",
)
_SCALE_DOWN_STEP = _integer_field(
    "scaleDownStep",
    "scale_down_step",
    1,
    (1, 1000),
    "Largest lowering of minReplicas per cycle.",
)
_MISSING_HOLD = _duration_field(
    "missingDataHold",
    "missing_data_hold_seconds",
    "30m",
    (0, 86400),
    "On missing, stale or unusable data, hold minReplicas this long, then decay to the base.",
)
_STALE_AFTER = _duration_field(
    "staleAfter",
    "stale_after_seconds",
    "5m",
    (1, 86400),
    "Data whose newest sample is older than this is stale.",
)
_MIN_HISTORY = _duration_field(
    "minHistory",
    "min_history_seconds",
    "1d",
    (0, 90 * 86400),
    "Less history than this, counted from the first sample, is too short to forecast: hold. "
    "From it on the non-seasonal models decide; seasonal ones join as the history allows.",
)
_DRY_RUN = _boolean_field("dryRun", "dry_run", False, "Decide and report, but never patch the HPA.")
_EXCLUDE: _Field[tuple[Exclusion, ...]] = _Field(
    "exclude",
    "list of exclusions",
    (),
    _EXCLUDE_RULE,
    "Time ranges left out of fitting (incidents, load tests): `{start, end, reason}`; "
    "a target's list replaces the defaults' list.",
    _parse_exclusions,
    "exclude",
    default_doc="`[]`",
)

_POLICY_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _INTERVAL,
    _HISTORY,
    _STEP,
    _WARMUP,
    _QUANTILE,
    _FLOOR_QUANTILE,
    _MODEL,
    _SEASONS_FIELD,
    _REFIT,
    _SCALE_UP_STEP,
    _SCALE_DOWN_DELAY,
    _SCALE_DOWN_STEP,
    _MISSING_HOLD,
    _STALE_AFTER,
    _MIN_HISTORY,
    _DRY_RUN,
    _EXCLUDE,
)


# ---- cross-field rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cross:
    """A rule between two keys of one section; reported on a key set at that level."""

    keys: tuple[str, str]
    doc: str
    violated: Callable[[Mapping[str, Any]], bool]
    message: Callable[[str, Mapping[str, Any]], str]
    """Rule text when reported on the given key."""


def _ordered(lhs: str, rhs: str, factor: int = 1, *, strict: bool = False) -> _Cross:
    """``lhs * factor <= rhs`` (``<`` when strict), between durations."""
    times = f" × {factor}" if factor != 1 else ""
    over = f" / {factor}" if factor != 1 else ""
    sign = "<" if strict else "≤"

    def violated(values: Mapping[str, Any]) -> bool:
        left = values[lhs] * factor
        return bool(left >= values[rhs] if strict else left > values[rhs])

    def message(key: str, values: Mapping[str, Any]) -> str:
        if key == lhs:
            word = "less than" if strict else "at most"
            return f"must be {word} {rhs}{over} ({rhs} is {format_duration(values[rhs])})"
        word = "greater than" if strict else "at least"
        return f"must be {word} {lhs}{times} ({lhs} is {format_duration(values[lhs])})"

    return _Cross((lhs, rhs), f"`{lhs}`{times} {sign} `{rhs}`", violated, message)


def _seasonal_model_violated(values: Mapping[str, Any]) -> bool:
    return values["model"] in _SEASONAL_MODELS and not values["seasons"]


def _seasonal_model_message(key: str, values: Mapping[str, Any]) -> str:
    if key == "model":
        return "needs at least one season, but seasons is empty"
    return f"must not be empty when model is {values['model']}"


_POLICY_CROSS: Final = (
    _ordered("step", "history", 10),
    _ordered("interval", "warmup"),
    _ordered("minHistory", "history"),
    _ordered("interval", "refitInterval"),
    _ordered("step", "staleAfter"),
    _Cross(
        ("model", "seasons"),
        "`model` " + " or ".join(_SEASONAL_MODELS) + " needs a non-empty `seasons`",
        _seasonal_model_violated,
        _seasonal_model_message,
    ),
)


# ---- signals -----------------------------------------------------------------------------------


def _parse_target_per_pod(value: object, ctx: _Ctx, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1e6:
        raise _Invalid(_TARGET_PER_POD_RULE)
    return float(value)


_TARGET_PER_POD_RULE: Final = "must be a number greater than 0 and at most 1000000, or null"

_SIGNAL_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _Field(
        "name",
        "string",
        None,
        "must be 1-63 characters from a-z, 0-9 and _, unique within the target",
        "Signal id (metrics, logs). Required unless `preset` is set.",
        _pattern_parser(
            _SIGNAL_NAME_RE,
            63,
            "must be 1-63 characters from a-z, 0-9 and _, unique within the target",
        ),
        "name",
        default_doc=f"`{_DEFAULT_SIGNAL_NAME}` with a preset",
    ),
    _Field(
        "preset",
        "string",
        None,
        "must be one of: " + ", ".join(SIGNAL_PRESETS),
        "Fills `query`, `queueQuery`, `runningQuery` and `hpaMetric` (see Presets); "
        "keys given explicitly win.",
        _choice_field("preset", "preset", "", tuple(SIGNAL_PRESETS), "").parse,
        "preset",
        default_doc="`null`",
        choices=tuple(SIGNAL_PRESETS),
    ),
    _Field(
        "query",
        "string",
        None,
        _QUERY_RULE,
        "PromQL for the demand summed over the target's pods (in units of the per-pod target). "
        "Required unless `preset` is set.",
        _parse_query,
        "query",
        default_doc="from preset",
    ),
    _Field(
        "queueQuery",
        "string",
        None,
        _QUERY_RULE + ", or null",
        "PromQL for requests waiting; corrects saturated demand upward by "
        "`waiting / max(running, 1)` at steps where both series have a sample (elsewhere the "
        "usage stands and the signal is partial: it may raise, never lower). `null` disables "
        "the correction.",
        _nullable(_parse_query),
        "queue_query",
        default_doc="from preset, else `null`",
    ),
    _Field(
        "runningQuery",
        "string",
        None,
        _QUERY_RULE + ", or null; required when queueQuery is set",
        "PromQL for requests running (denominator of the saturation correction).",
        _nullable(_parse_query),
        "running_query",
        default_doc="from preset, else `null`",
    ),
    _Field(
        "targetPerPod",
        "number",
        None,
        _TARGET_PER_POD_RULE,
        "Demand one pod should carry; replicas needed = ceil(forecast / targetPerPod). "
        "`null` reads the HPA's own target for `hpaMetric`.",
        _parse_target_per_pod,
        "target_per_pod",
    ),
    _Field(
        "hpaMetric",
        "string",
        None,
        "must be a metric name of at most 253 characters ([a-zA-Z_:][a-zA-Z0-9_:.-/]*), or null; "
        "required when targetPerPod is null",
        "The HPA metric whose target is used when `targetPerPod` is null.",
        _nullable(
            _pattern_parser(
                _METRIC_NAME_RE,
                253,
                "must be a metric name of at most 253 characters ([a-zA-Z_:][a-zA-Z0-9_:.-/]*), "
                "or null; required when targetPerPod is null",
            )
        ),
        "hpa_metric",
        default_doc="from preset, else `null`",
    ),
)


# ---- targets -----------------------------------------------------------------------------------

_SELECTOR_RULE: Final = (
    "must be a mapping of Prometheus label names ([a-zA-Z_][a-zA-Z0-9_]*, not 'namespace') "
    f"to non-empty strings of at most {_MAX_TEXT_LEN} characters"
)


def _parse_selector(value: object, ctx: _Ctx, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise _Invalid(_SELECTOR_RULE)
    pairs: list[tuple[str, str]] = []
    ok = True
    for key, item in value.items():
        item_path = _join(path, key)
        if not isinstance(key, str) or not _LABEL_NAME_RE.fullmatch(key) or key == "namespace":
            ctx.add(item_path, key, _SELECTOR_RULE)
            ok = False
        elif not isinstance(item, str) or not 0 < len(item) <= _MAX_TEXT_LEN:
            ctx.add(item_path, item, _SELECTOR_RULE)
            ok = False
        else:
            pairs.append((key, item))
    if not ok:
        raise _Invalid(None)
    return tuple(sorted(pairs))


_TARGET_ID_RULE: Final = (
    "must be 1-253 characters from letters, digits, '.', '_', '-' and '/', starting with a "
    "letter or digit, unique across targets"
)

_HPA_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _Field(
        "namespace",
        "string",
        "",
        _DNS_LABEL_RULE,
        "Namespace of the HorizontalPodAutoscaler.",
        _pattern_parser(_DNS_LABEL_RE, 63, _DNS_LABEL_RULE),
        "namespace",
        required=True,
    ),
    _Field(
        "name",
        "string",
        "",
        _DNS_SUBDOMAIN_RULE,
        "Name of the HorizontalPodAutoscaler (autoscaling/v2).",
        _parse_dns_subdomain,
        "name",
        required=True,
    ),
)

_TARGET_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _section(
        "hpa",
        "mapping",
        "must be a mapping {namespace, name}; one target per HPA",
        "The HPA whose minReplicas is managed.",
        required=True,
    ),
    _Field(
        "name",
        "string",
        None,
        _TARGET_ID_RULE,
        "Display id of the target (logs, metrics, events).",
        _pattern_parser(_TARGET_ID_RE, 253, _TARGET_ID_RULE),
        "id",
        default_doc="`<namespace>/<name>`",
    ),
    _boolean_field(
        "enabled",
        "enabled",
        True,
        "A disabled target is left alone; its base minReplicas is restored.",
    ),
    _Field(
        "selector",
        "mapping",
        (),
        _SELECTOR_RULE,
        'Label equality matchers for the target\'s pods; `namespace="<hpa.namespace>"` is '
        "always added. Together they replace `${matchers}` in queries.",
        _parse_selector,
        "selector",
        default_doc="`{}`",
    ),
    _section(
        "signals",
        "list of signals",
        "must be a non-empty list of signals with unique names",
        "Demand signals; the largest replica need across them counts.",
    ),
)


# ---- prometheus and controller -----------------------------------------------------------------

_URL_RULE: Final = (
    "must be an http:// or https:// URL with a host, without credentials, query or fragment"
)


def _parse_url(value: object, ctx: _Ctx, path: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 2048:
        raise _Invalid(_URL_RULE)
    if any(char.isspace() or ord(char) < 32 for char in value):
        raise _Invalid(_URL_RULE)
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port
    except ValueError:
        raise _Invalid(_URL_RULE) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid(_URL_RULE)
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise _Invalid(_URL_RULE)
    return value


_FILE_RULE: Final = f"must be an absolute file path of at most {_MAX_PATH_LEN} characters"


def _parse_file(value: object, ctx: _Ctx, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_PATH_LEN:
        raise _Invalid(_FILE_RULE)
    if not value.startswith("/") or any(ord(char) < 32 for char in value):
        raise _Invalid(_FILE_RULE)
    return value


_HEADERS_RULE: Final = (
    "must be a mapping of HTTP header names to strings without line breaks; "
    "Authorization, Proxy-Authorization and Cookie are not allowed (use bearerTokenFile or "
    "basicAuth)"
)


def _parse_headers(value: object, ctx: _Ctx, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise _Invalid(_HEADERS_RULE)
    pairs: list[tuple[str, str]] = []
    ok = True
    for key, item in value.items():
        item_path = _join(path, key)
        if (
            not isinstance(key, str)
            or len(key) > 256
            or not _HEADER_NAME_RE.fullmatch(key)
            or key.lower() in _FORBIDDEN_HEADERS
        ):
            ctx.add(item_path, key, _HEADERS_RULE)
            ok = False
        elif (
            not isinstance(item, str) or len(item) > 8192 or any(char in item for char in "\r\n\0")
        ):
            ctx.add(item_path, item, _HEADERS_RULE, secret=True)
            ok = False
        else:
            pairs.append((key, item))
    if not ok:
        raise _Invalid(None)
    return tuple(pairs)


_BASIC_AUTH_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _Field(
        "username",
        "string",
        "",
        f"must be a non-empty string of at most {_MAX_TEXT_LEN} characters without line breaks",
        "Basic-auth user name.",
        _pattern_parser(
            re.compile(r"[^\r\n\0:]+"),
            _MAX_TEXT_LEN,
            f"must be a non-empty string of at most {_MAX_TEXT_LEN} characters without line breaks",
        ),
        "username",
        required=True,
    ),
    _Field(
        "passwordFile",
        "string",
        "",
        _FILE_RULE,
        "File holding the basic-auth password (mount a Secret).",
        _parse_file,
        "password_file",
        required=True,
        secret=True,
    ),
)

_PROMETHEUS_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _Field(
        "url",
        "string",
        "",
        _URL_RULE,
        "Base URL of the Prometheus HTTP API (Prometheus, Thanos Query, Mimir...).",
        _parse_url,
        "url",
        required=True,
        secret=True,
    ),
    _duration_field(
        "timeout", "timeout_seconds", "10s", (1, 300), "Timeout of one Prometheus request."
    ),
    _Field(
        "bearerTokenFile",
        "string",
        None,
        _FILE_RULE + ", or null; not together with basicAuth",
        "File holding a bearer token, re-read on each request (mount a Secret).",
        _parse_file,
        "bearer_token_file",
        secret=True,
    ),
    _section(
        "basicAuth",
        "mapping",
        "must be a mapping {username, passwordFile}, or null; not together with bearerTokenFile",
        "HTTP basic authentication.",
    ),
    _Field(
        "caBundle",
        "string",
        None,
        _FILE_RULE + ", or null; not together with verifyTls: false",
        "PEM file of CA certificates to trust (instead of the system's).",
        _parse_file,
        "ca_bundle",
    ),
    _boolean_field("verifyTls", "verify_tls", True, "Verify the server's TLS certificate."),
    _Field(
        "headers",
        "mapping",
        (),
        _HEADERS_RULE,
        "Extra HTTP headers, e.g. `X-Scope-OrgID` for multi-tenant Mimir/Cortex/Thanos. "
        "Values are never shown in errors.",
        _parse_headers,
        "headers",
        default_doc="`{}`",
    ),
)

_HPA_WATCH_RULE: Final = "must be one of: cluster, namespaces, off"


def _parse_hpa_watch(value: object, ctx: _Ctx, path: str) -> str:
    # YAML 1.1 reads a bare `off` as false: take it as the word the user wrote.
    if value is False:
        return "off"
    if value not in {"cluster", "namespaces", "off"}:
        raise _Invalid(_HPA_WATCH_RULE)
    return str(value)


_CONTROLLER_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _integer_field(
        "metricsPort", "metrics_port", 8080, (1, 65535), "Port of the `/metrics` endpoint."
    ),
    _Field(
        "leaseName",
        "string",
        "predictive-scaler",
        _DNS_SUBDOMAIN_RULE,
        "Name of the coordination.k8s.io Lease used for leader election.",
        _parse_dns_subdomain,
        "lease_name",
    ),
    _Field(
        "leaseNamespace",
        "string",
        None,
        _DNS_LABEL_RULE + ", or null",
        "Namespace of the Lease; `null` means the controller's own namespace.",
        _nullable(_pattern_parser(_DNS_LABEL_RE, 63, _DNS_LABEL_RULE + ", or null")),
        "lease_namespace",
    ),
    _duration_field(
        "leaseDuration",
        "lease_duration_seconds",
        "15s",
        (5, 300),
        "How long a leader's Lease is valid without renewal.",
    ),
    _duration_field(
        "renewPeriod",
        "renew_period_seconds",
        "5s",
        (1, 300),
        "How often the leader renews (and candidates retry) the Lease.",
    ),
    _Field(
        "hpaWatch",
        "string",
        "cluster",
        _HPA_WATCH_RULE,
        "How HPAs are read: `cluster` one list + watch of all namespaces (the shipped "
        "ClusterRole allows it); `namespaces` one per namespace that has a target (enough "
        "with a Role per namespace); `off` a GET per target per cycle (RBAC without "
        "list/watch). Until the watch has synced, and while it is broken, reads are GETs.",
        _parse_hpa_watch,
        "hpa_watch",
    ),
)

_CONTROLLER_CROSS: Final = (_ordered("renewPeriod", "leaseDuration", strict=True),)

_ROOT_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _section(
        "defaults",
        "mapping",
        "must be a mapping of policy keys, or null",
        "Policy for every target (see Policy).",
    ),
    _section(
        "targets",
        "list",
        "must be a list of targets, or null; one target per HPA, ids unique",
        "The HPAs to manage (see Targets). An empty list manages nothing.",
    ),
    _section(
        "prometheus",
        "mapping",
        "must be a mapping, or null",
        "How to reach Prometheus. `null`: the command line decides.",
    ),
    _section(
        "controller",
        "mapping",
        "must be a mapping, or null",
        "Process settings (metrics port, leader election).",
    ),
)


# --------------------------------------------------------------------------------------------
# The validated configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exclusion:
    """A time range left out of fitting (an incident, a load test)."""

    start: datetime
    """Start, inclusive; timezone-aware (UTC)."""

    end: datetime
    """End, exclusive; timezone-aware (UTC), later than ``start``."""

    reason: str = ""
    """Why the range is excluded (free text)."""


@dataclass(frozen=True)
class Policy:
    """The tuning knobs of one target (``defaults:``, overridden per target). Durations in
    seconds."""

    interval_seconds: float = _INTERVAL.default
    """Cycle period."""

    history_seconds: float = _HISTORY.default
    """History read from Prometheus for fitting."""

    step_seconds: float = _STEP.default
    """Prometheus range-query step."""

    warmup_seconds: float = _WARMUP.default
    """Time from pod creation to serving."""

    quantile: float = _QUANTILE.default
    """Upper forecast quantile used for capacity, in (0.5, 1)."""

    floor_quantile: float = _FLOOR_QUANTILE.default
    """History floor: this quantile of the fitted history's demand, under the forecast; 0
    is off."""

    model: str = _MODEL.default
    """Forecast model name, one of :data:`MODELS`."""

    seasons: tuple[str, ...] = _SEASONS_FIELD.default
    """Seasonalities, a subset of :data:`SEASONS` in canonical order."""

    refit_interval_seconds: float = _REFIT.default
    """How often the model is refitted."""

    scale_up_step: int = _SCALE_UP_STEP.default
    """Largest raise of minReplicas per cycle."""

    scale_down_delay_seconds: float = _SCALE_DOWN_DELAY.default
    """How long the forecast must stay lower before lowering minReplicas."""

    scale_down_step: int = _SCALE_DOWN_STEP.default
    """Largest lowering of minReplicas per cycle."""

    missing_data_hold_seconds: float = _MISSING_HOLD.default
    """On bad data, hold this long, then decay to the base."""

    stale_after_seconds: float = _STALE_AFTER.default
    """Newest sample older than this means stale data."""

    min_history_seconds: float = _MIN_HISTORY.default
    """Shorter history is not enough to forecast seasonally."""

    dry_run: bool = _DRY_RUN.default
    """Decide and report, never patch."""

    exclude: tuple[Exclusion, ...] = _EXCLUDE.default
    """Time ranges left out of fitting."""

    @property
    def horizon_seconds(self) -> float:
        """Forecast horizon: warm-up plus one cycle."""
        return self.warmup_seconds + self.interval_seconds


@dataclass(frozen=True)
class Signal:
    """One demand signal of a target. Queries may contain ``${matchers}``."""

    name: str
    """Id, unique within the target (``[a-z0-9_]+``)."""

    query: str
    """PromQL for the demand, summed over the target's pods."""

    queue_query: str | None = None
    """PromQL for waiting requests; ``None`` disables saturation correction."""

    running_query: str | None = None
    """PromQL for running requests; set whenever ``queue_query`` is."""

    target_per_pod: float | None = None
    """Demand per pod; ``None`` means read the HPA's target for ``hpa_metric``."""

    hpa_metric: str | None = None
    """HPA metric whose target is used when ``target_per_pod`` is ``None``."""


def _preset_signal(preset: str, name: str = _DEFAULT_SIGNAL_NAME) -> Signal:
    values = SIGNAL_PRESETS[preset]
    return Signal(
        name=name,
        query=values["query"],
        queue_query=values["queueQuery"],
        running_query=values["runningQuery"],
        hpa_metric=values["hpaMetric"],
    )


DEFAULT_SIGNALS: Final[tuple[Signal, ...]] = (_preset_signal(_DEFAULT_PRESET),)
"""Signals of a target that lists none: NIM KV-cache demand."""


@dataclass(frozen=True)
class Target:
    """One managed HPA."""

    id: str
    """Display id, unique across targets (default ``<namespace>/<name>``)."""

    namespace: str
    """Namespace of the HPA."""

    name: str
    """Name of the HPA."""

    enabled: bool = True
    """A disabled target gets its base minReplicas back and is otherwise left alone."""

    selector: tuple[tuple[str, str], ...] = ()
    """Label equality matchers for the target's pods, sorted by label name."""

    signals: tuple[Signal, ...] = DEFAULT_SIGNALS
    """Demand signals; the largest replica need counts."""

    policy: Policy = field(default_factory=Policy)
    """Effective policy: the defaults with this target's overrides."""

    @property
    def match_labels(self) -> dict[str, str]:
        """The labels ``${matchers}`` stands for: ``namespace`` first, then the selector.

        Render them with :func:`predictive_scaler.prometheus.render_matchers`, which escapes.
        """
        return {"namespace": self.namespace, **dict(self.selector)}


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication for Prometheus."""

    username: str
    """User name."""

    password_file: str
    """Path of the file holding the password."""


@dataclass(frozen=True)
class PrometheusConfig:
    """How to reach Prometheus."""

    url: str
    """Base URL of the HTTP API."""

    timeout_seconds: float = 10.0
    """Timeout of one request."""

    bearer_token_file: str | None = None
    """Path of a file holding a bearer token."""

    basic_auth: BasicAuth | None = None
    """Basic authentication, exclusive with ``bearer_token_file``."""

    ca_bundle: str | None = None
    """Path of a PEM CA bundle."""

    verify_tls: bool = True
    """Verify the server certificate."""

    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Extra HTTP headers (not in ``repr``: values may be tenant ids or keys)."""


@dataclass(frozen=True)
class ControllerConfig:
    """Process settings."""

    metrics_port: int = 8080
    """Port of ``/metrics``."""

    lease_name: str = "predictive-scaler"
    """Name of the leader-election Lease."""

    lease_namespace: str | None = None
    """Namespace of the Lease; ``None`` means the controller's own namespace."""

    lease_duration_seconds: float = 15.0
    """Validity of a Lease without renewal."""

    renew_period_seconds: float = 5.0
    """Renewal (and retry) period, shorter than ``lease_duration_seconds``."""

    hpa_watch: str = "cluster"
    """How HPAs are read: ``cluster``, ``namespaces`` (list + watch) or ``off`` (GETs)."""


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    defaults: Policy = field(default_factory=Policy)
    """Policy of targets that override nothing."""

    targets: tuple[Target, ...] = ()
    """Managed HPAs, in configuration order."""

    prometheus: PrometheusConfig | None = None
    """How to reach Prometheus; ``None`` when the config does not say."""

    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """Process settings."""

    def enabled_targets(self) -> tuple[Target, ...]:
        """The targets with ``enabled: true``, in configuration order."""
        return tuple(target for target in self.targets if target.enabled)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

_SIMPLE_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_SECRETISH_KEY_RE: Final = re.compile(r"(?i)pass|secret|token|auth|cred|key|cookie")


def _join(path: str, key: object) -> str:
    """Append a mapping key to a path: ``a.b``, or ``a['x.y']`` for unusual keys."""
    if isinstance(key, str) and _SIMPLE_KEY_RE.fullmatch(key) and len(key) <= 64:
        return f"{path}.{key}" if path else key
    return f"{path}[{_short_repr(key, 40)}]"


def _check_keys(
    data: Mapping[Any, Any],
    path: str,
    allowed: Sequence[str],
    ctx: _Ctx,
    *,
    secret: bool = False,
) -> bool:
    """Report every key of ``data`` not in ``allowed``; True when there was none."""
    ok = True
    for key in data:
        if isinstance(key, str) and key in allowed:
            continue
        ok = False
        hint = ""
        if isinstance(key, str):
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        hide = secret or (isinstance(key, str) and _SECRETISH_KEY_RE.search(key) is not None)
        ctx.add(
            _join(path, key),
            data[key],
            f"unknown key{hint}; allowed keys: {', '.join(allowed)}",
            secret=hide,
        )
    return ok


def _parse_fields(
    data: Mapping[Any, Any],
    path: str,
    fields: Sequence[_Field[Any]],
    ctx: _Ctx,
) -> tuple[dict[str, Any], set[str]]:
    """Parse the keys of ``data`` that ``fields`` know and that have a parser.

    Returns the parsed values of the keys present and valid, and the keys present but invalid.
    Missing required keys are reported. Unknown keys are not checked here.
    """
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for item in fields:
        if item.key not in data:
            if item.required and item.parse is not None:
                ctx.missing(_join(path, item.key))
                bad.add(item.key)
            continue
        if item.parse is None:
            continue
        raw = data[item.key]
        try:
            values[item.key] = item.parse(raw, ctx, _join(path, item.key))
        except _Invalid as exc:
            bad.add(item.key)
            if exc.rule is not None:
                ctx.add(_join(path, item.key), raw, exc.rule, secret=item.secret)
    return values, bad


def _as_mapping(data: object, path: str, item: _Field[Any], ctx: _Ctx) -> Mapping[Any, Any] | None:
    """A section's mapping; ``None`` (YAML ``key:``) counts as empty. Reports other types."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        ctx.add(path, data, item.rule)
        return None
    return data


def _check_cross(
    rules: Iterable[_Cross],
    *,
    values: Mapping[str, Any],
    explicit: Iterable[str],
    bad: set[str],
    path: str,
    raw: Mapping[Any, Any],
    ctx: _Ctx,
    inherited: bool,
) -> set[str]:
    """Check cross-field rules on effective ``values``; report on a key set at this level.

    With ``inherited``, a violation among keys none of which is set here was already reported
    at the level they come from, so it is skipped. Returns the keys reported.
    """
    explicit = set(explicit)
    reported: set[str] = set()
    for rule in rules:
        if any(key in bad for key in rule.keys) or not rule.violated(values):
            continue
        here = [key for key in rule.keys if key in explicit]
        if not here and inherited:
            continue
        key = here[0] if here else rule.keys[0]
        ctx.add(_join(path, key), raw.get(key, values[key]), rule.message(key, values))
        reported.add(key)
    return reported


_POLICY_KEYS: Final = tuple(item.key for item in _POLICY_FIELDS)


def _build_policy(values: Mapping[str, Any]) -> Policy:
    kwargs: dict[str, Any] = {item.attr: values[item.key] for item in _POLICY_FIELDS}
    return Policy(**kwargs)


def _builtin_policy_values() -> dict[str, Any]:
    return {item.key: item.default for item in _POLICY_FIELDS}


def _parse_signal(data: object, path: str, ctx: _Ctx) -> tuple[Signal | None, str | None]:
    """One signal; returns the signal (or ``None`` when invalid) and its name if known."""
    if not isinstance(data, Mapping):
        ctx.add(path, data, "must be a mapping with keys: " + ", ".join(_SIGNAL_KEYS))
        return None, None
    ok = _check_keys(data, path, _SIGNAL_KEYS, ctx)
    values, bad = _parse_fields(data, path, _SIGNAL_FIELDS, ctx)
    ok = ok and not bad
    preset = values.get("preset")
    merged: dict[str, Any] = {}
    if isinstance(preset, str):
        merged.update(SIGNAL_PRESETS[preset])
        merged["name"] = _DEFAULT_SIGNAL_NAME
    merged.update((key, value) for key, value in values.items() if key != "preset")
    if "preset" in bad:
        # The preset would have filled the other keys: their absence says nothing more.
        return None, None

    for key in ("name", "query"):
        if key not in bad and merged.get(key) is None:
            ctx.missing(_join(path, key), "is required unless preset is set")
            ok = False
    if (
        merged.get("queueQuery") is not None
        and merged.get("runningQuery") is None
        and "runningQuery" not in bad
    ):
        ctx.missing(_join(path, "runningQuery"), "is required when queueQuery is set")
        ok = False
    if (
        merged.get("targetPerPod") is None
        and merged.get("hpaMetric") is None
        and not {"targetPerPod", "hpaMetric"} & bad
        and merged.get("query") is not None
    ):
        ctx.missing(
            _join(path, "targetPerPod"),
            "is required when hpaMetric is null (the HPA target to read)",
        )
        ok = False
    name = merged.get("name") if "name" not in bad else None
    if not ok:
        return None, name if isinstance(name, str) else None
    return (
        Signal(
            name=merged["name"],
            query=merged["query"],
            queue_query=merged.get("queueQuery"),
            running_query=merged.get("runningQuery"),
            target_per_pod=merged.get("targetPerPod"),
            hpa_metric=merged.get("hpaMetric"),
        ),
        merged["name"],
    )


_SIGNAL_KEYS: Final = tuple(item.key for item in _SIGNAL_FIELDS)
_SIGNALS_FIELD: Final = next(item for item in _TARGET_FIELDS if item.key == "signals")
_HPA_FIELD: Final = next(item for item in _TARGET_FIELDS if item.key == "hpa")


def _parse_signals(data: object, path: str, ctx: _Ctx) -> tuple[Signal, ...] | None:
    if not isinstance(data, list | tuple) or not data:
        ctx.add(path, data, _SIGNALS_FIELD.rule)
        return None
    signals: list[Signal] = []
    first_index: dict[str, int] = {}
    ok = True
    for index, item in enumerate(data):
        item_path = f"{path}[{index}]"
        signal, name = _parse_signal(item, item_path, ctx)
        if name is not None:
            if name in first_index:
                ctx.add(
                    f"{item_path}.name",
                    name,
                    f"duplicate signal name; signals[{first_index[name]}] has the same name",
                )
                ok = False
            else:
                first_index[name] = index
        if signal is None:
            ok = False
        else:
            signals.append(signal)
    return tuple(signals) if ok else None


_TARGET_KEYS: Final = tuple(item.key for item in _TARGET_FIELDS) + _POLICY_KEYS


@dataclass(frozen=True)
class _ParsedTarget:
    target: Target | None
    hpa: tuple[str, str] | None
    id: str | None
    explicit_id: bool


def _parse_target(
    data: object,
    path: str,
    defaults: Mapping[str, Any],
    defaults_bad: set[str],
    ctx: _Ctx,
) -> _ParsedTarget:
    if not isinstance(data, Mapping):
        ctx.add(path, data, "must be a mapping with at least the key: hpa")
        return _ParsedTarget(None, None, None, explicit_id=False)
    ok = _check_keys(data, path, _TARGET_KEYS, ctx)

    hpa: tuple[str, str] | None = None
    if "hpa" not in data:
        ctx.missing(_join(path, "hpa"))
        ok = False
    elif not isinstance(data["hpa"], Mapping):
        ctx.add(_join(path, "hpa"), data["hpa"], _HPA_FIELD.rule)
        ok = False
    else:
        hpa_path = _join(path, "hpa")
        ok = _check_keys(data["hpa"], hpa_path, _HPA_KEYS, ctx) and ok
        hpa_values, hpa_bad = _parse_fields(data["hpa"], hpa_path, _HPA_FIELDS, ctx)
        if hpa_bad:
            ok = False
        else:
            hpa = (hpa_values["namespace"], hpa_values["name"])

    values, bad = _parse_fields(data, path, _TARGET_FIELDS, ctx)
    ok = ok and not bad
    signals: tuple[Signal, ...] = DEFAULT_SIGNALS
    if "signals" in data:
        parsed = _parse_signals(data["signals"], _join(path, "signals"), ctx)
        if parsed is None:
            ok = False
        else:
            signals = parsed

    policy_values, policy_bad = _parse_fields(data, path, _POLICY_FIELDS, ctx)
    effective = {**defaults, **policy_values}
    explicit = set(policy_values)
    inherited_bad = (defaults_bad - explicit) | policy_bad
    crossed = _check_cross(
        _POLICY_CROSS,
        values=effective,
        explicit=explicit,
        bad=inherited_bad,
        path=path,
        raw=data,
        ctx=ctx,
        inherited=True,
    )
    if policy_bad or crossed:
        ok = False

    target_id = values.get("name")
    explicit_id = target_id is not None
    if target_id is None and hpa is not None and "name" not in bad:
        target_id = f"{hpa[0]}/{hpa[1]}"
    if not ok or hpa is None or target_id is None or defaults_bad - explicit:
        return _ParsedTarget(None, hpa, target_id, explicit_id)
    target = Target(
        id=target_id,
        namespace=hpa[0],
        name=hpa[1],
        enabled=values.get("enabled", True),
        selector=values.get("selector", ()),
        signals=signals,
        policy=_build_policy(effective),
    )
    return _ParsedTarget(target, hpa, target_id, explicit_id)


_HPA_KEYS: Final = tuple(item.key for item in _HPA_FIELDS)


def _parse_targets(
    data: object, defaults: Mapping[str, Any], defaults_bad: set[str], ctx: _Ctx
) -> tuple[Target, ...] | None:
    if data is None:
        return ()
    if not isinstance(data, list | tuple):
        ctx.add("targets", data, _ROOT_BY_KEY["targets"].rule)
        return None
    targets: list[Target] = []
    by_hpa: dict[tuple[str, str], int] = {}
    by_id: dict[str, int] = {}
    by_pods: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    ok = True
    for index, item in enumerate(data):
        path = f"targets[{index}]"
        parsed = _parse_target(item, path, defaults, defaults_bad, ctx)
        duplicate_hpa = False
        if parsed.hpa is not None:
            if parsed.hpa in by_hpa:
                duplicate_hpa = True
                ctx.add(
                    f"{path}.hpa",
                    "/".join(parsed.hpa),
                    f"duplicate target: targets[{by_hpa[parsed.hpa]}] manages the same HPA",
                )
                ok = False
            else:
                by_hpa[parsed.hpa] = index
        if parsed.id is not None:
            if parsed.id in by_id:
                if not duplicate_hpa or parsed.explicit_id:
                    ctx.add(
                        f"{path}.name",
                        parsed.id,
                        f"duplicate target id: targets[{by_id[parsed.id]}] has the same id",
                    )
                ok = False
            else:
                by_id[parsed.id] = index
        if parsed.target is None:
            ok = False
        else:
            targets.append(parsed.target)
            pods = (parsed.target.namespace, tuple(sorted(parsed.target.selector)))
            if parsed.target.selector and parsed.target.enabled:
                if pods in by_pods:
                    ctx.add(
                        f"{path}.selector",
                        dict(parsed.target.selector),
                        f"pods overlap: targets[{by_pods[pods]}] selects the same pods in this "
                        "namespace, so both would sum them; give each its own selector",
                    )
                    ok = False
                else:
                    by_pods[pods] = index
    return tuple(targets) if ok else None


_ROOT_BY_KEY: Final = {item.key: item for item in _ROOT_FIELDS}
_ROOT_KEYS: Final = tuple(_ROOT_BY_KEY)
_PROMETHEUS_KEYS: Final = tuple(item.key for item in _PROMETHEUS_FIELDS)
_BASIC_AUTH_KEYS: Final = tuple(item.key for item in _BASIC_AUTH_FIELDS)
_CONTROLLER_KEYS: Final = tuple(item.key for item in _CONTROLLER_FIELDS)


def _parse_prometheus(data: object, ctx: _Ctx) -> tuple[PrometheusConfig | None, bool]:
    if data is None:
        return None, True
    section = _as_mapping(data, "prometheus", _ROOT_BY_KEY["prometheus"], ctx)
    if section is None:
        return None, False
    ok = _check_keys(section, "prometheus", _PROMETHEUS_KEYS, ctx, secret=True)
    values, bad = _parse_fields(section, "prometheus", _PROMETHEUS_FIELDS, ctx)
    ok = ok and not bad
    basic_auth: BasicAuth | None = None
    raw_auth = section.get("basicAuth")
    if raw_auth is not None:
        auth_field = next(item for item in _PROMETHEUS_FIELDS if item.key == "basicAuth")
        if not isinstance(raw_auth, Mapping):
            ctx.add("prometheus.basicAuth", raw_auth, auth_field.rule, secret=True)
            ok = False
        else:
            path = "prometheus.basicAuth"
            ok = _check_keys(raw_auth, path, _BASIC_AUTH_KEYS, ctx, secret=True) and ok
            auth_values, auth_bad = _parse_fields(raw_auth, path, _BASIC_AUTH_FIELDS, ctx)
            if auth_bad:
                ok = False
            else:
                basic_auth = BasicAuth(auth_values["username"], auth_values["passwordFile"])
            if values.get("bearerTokenFile") is not None:
                ctx.add(
                    "prometheus.bearerTokenFile",
                    None,
                    "must not be set together with basicAuth",
                    secret=True,
                )
                ok = False
    if values.get("caBundle") is not None and values.get("verifyTls") is False:
        # The Prometheus adapter refuses this pair; caught here so `validate-config` agrees.
        ctx.add(
            "prometheus.caBundle",
            values["caBundle"],
            "must not be set together with verifyTls: false (a CA bundle is only used to "
            "verify the server): remove caBundle, or set verifyTls: true",
        )
        ok = False
    if not ok:
        return None, False
    return (
        PrometheusConfig(
            url=values["url"],
            timeout_seconds=values.get("timeout", 10.0),
            bearer_token_file=values.get("bearerTokenFile"),
            basic_auth=basic_auth,
            ca_bundle=values.get("caBundle"),
            verify_tls=values.get("verifyTls", True),
            headers=values.get("headers", ()),
        ),
        True,
    )


def _parse_controller(data: object, ctx: _Ctx) -> ControllerConfig | None:
    section = _as_mapping(data, "controller", _ROOT_BY_KEY["controller"], ctx)
    if section is None:
        return None
    ok = _check_keys(section, "controller", _CONTROLLER_KEYS, ctx)
    values, bad = _parse_fields(section, "controller", _CONTROLLER_FIELDS, ctx)
    effective = {item.key: item.default for item in _CONTROLLER_FIELDS} | values
    crossed = _check_cross(
        _CONTROLLER_CROSS,
        values=effective,
        explicit=values,
        bad=bad,
        path="controller",
        raw=section,
        ctx=ctx,
        inherited=False,
    )
    if crossed:
        ok = False
    if not ok or bad:
        return None
    kwargs: dict[str, Any] = {item.attr: effective[item.key] for item in _CONTROLLER_FIELDS}
    return ControllerConfig(**kwargs)


def _parse_root(data: object, ctx: _Ctx) -> Config | None:
    if not isinstance(data, Mapping):
        ctx.add(
            "<root>",
            data,
            "the configuration must be a mapping with keys: " + ", ".join(_ROOT_KEYS),
        )
        return None
    ok = _check_keys(data, "", _ROOT_KEYS, ctx)

    defaults = _builtin_policy_values()
    defaults_bad: set[str] = set()
    section = _as_mapping(data.get("defaults"), "defaults", _ROOT_BY_KEY["defaults"], ctx)
    if section is None:
        ok = False
    else:
        ok = _check_keys(section, "defaults", _POLICY_KEYS, ctx) and ok
        values, defaults_bad = _parse_fields(section, "defaults", _POLICY_FIELDS, ctx)
        defaults.update(values)
        crossed = _check_cross(
            _POLICY_CROSS,
            values=defaults,
            explicit=values,
            bad=defaults_bad,
            path="defaults",
            raw=section,
            ctx=ctx,
            inherited=False,
        )
        if defaults_bad or crossed:
            ok = False

    targets = _parse_targets(data.get("targets"), defaults, defaults_bad, ctx)
    prometheus, prometheus_ok = _parse_prometheus(data.get("prometheus"), ctx)
    controller = _parse_controller(data.get("controller"), ctx)
    if not ok or not prometheus_ok or controller is None or targets is None:
        return None
    return Config(
        defaults=_build_policy(defaults),
        targets=targets,
        prometheus=prometheus,
        controller=controller,
    )


def parse_config_data(data: object) -> Config:
    """Validate already-loaded YAML data (plain dicts, lists and scalars).

    Raises :class:`ConfigError` listing every issue found.
    """
    ctx = _Ctx()
    try:
        config = _parse_root(data, ctx)
    except RecursionError:  # pragma: no cover -- the schema bounds recursion; belt and braces
        ctx.add("<root>", None, "the configuration is nested too deeply")
        config = None
    if ctx.issues or config is None:
        if not ctx.issues:  # pragma: no cover -- every failure path records an issue
            ctx.add("<root>", data, "invalid configuration")
        raise ConfigError(ctx.issues)
    return config


def _yaml_issue(exc: yaml.YAMLError, text: str) -> ConfigIssue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    detail = f"{context}: {problem}" if context else str(problem)
    if mark is None:
        return ConfigIssue("<yaml>", None, f"invalid YAML: {detail}")
    lines = text.splitlines()
    snippet = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    return ConfigIssue(
        "<yaml>",
        _short_repr(snippet.strip()),
        f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {detail}",
    )


def _duplicate_key_issues(text: str) -> list[ConfigIssue]:
    """Duplicate mapping keys, which ``yaml.safe_load`` silently resolves to the last one.

    Walks the composed node graph (no construction; aliases visited once).
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    issues: list[tuple[int, int, ConfigIssue]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                child = _join(path, key) if isinstance(key, str) else path
                if isinstance(key, str):
                    identity = (key_node.tag, key)
                    mark = key_node.start_mark
                    if identity in first:
                        rule = (
                            f"duplicate key at line {mark.line + 1}, column {mark.column + 1} "
                            f"(first at line {first[identity]})"
                        )
                        issue = ConfigIssue(child, _short_repr(key), rule)
                        issues.append((mark.line, mark.column, issue))
                    else:
                        first[identity] = mark.line + 1
                stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, f"{path}[{index}]"))
    issues.sort(key=lambda entry: (entry[0], entry[1]))
    return [issue for _, _, issue in issues]


def parse_config(text: str) -> Config:
    """Parse and validate YAML text (the ConfigMap's ``config.yaml``).

    Uses ``yaml.safe_load`` only. Raises :class:`ConfigError` listing every issue found: broken
    YAML (``<yaml>`` with line and column), duplicate keys, and every broken rule.
    """
    try:
        data = yaml.safe_load(text)
        duplicates = _duplicate_key_issues(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(exc, text)]) from None
    except RecursionError:
        raise ConfigError(
            [ConfigIssue("<yaml>", None, "invalid YAML: nested too deeply")]
        ) from None
    if data is None:
        raise ConfigError(
            [ConfigIssue("<root>", None, "the configuration is empty; expected a mapping")]
        )
    try:
        config = parse_config_data(data)
    except ConfigError as exc:
        raise ConfigError(duplicates + exc.errors) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config


def load_config_file(path: str | os.PathLike[str]) -> Config:
    """Read a UTF-8 YAML file and :func:`parse_config` it.

    An unreadable file (missing, a directory, no permission, not UTF-8) raises
    :class:`ConfigError` with path ``<file>``.
    """
    name = _short_repr(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([ConfigIssue("<file>", name, f"cannot read: {reason}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("<file>", name, "cannot read: not valid UTF-8")]) from None
    return parse_config(text)


# --------------------------------------------------------------------------------------------
# Reference documentation, generated from the same metadata
# --------------------------------------------------------------------------------------------


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
    "A signal needs a `query` or a `preset`; `queueQuery` needs `runningQuery`; `targetPerPod` "
    "and `hpaMetric` must not both be null.",
    "`prometheus.bearerTokenFile` and `prometheus.basicAuth` are exclusive, and so are "
    "`prometheus.caBundle` and `verifyTls: false`. Errors never show "
    "the values of `url`, `bearerTokenFile`, `passwordFile`, `headers`, nor of unknown keys "
    "under `prometheus`.",
    "A section key with an empty value (`defaults:`) means an empty section; an empty "
    "document is an error.",
    "All issues are reported at once, one per line: `path: got value: rule`.",
)


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
