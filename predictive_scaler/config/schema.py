"""The schema machinery: field metadata, field constructors, rules between keys, and the checks
every section shares.

One table of field metadata (:class:`_Field`) per section drives three things: which keys are
allowed, how each value is checked (the rule text in every error), and the reference in
``docs/configuration.md`` (``reference.render_reference``) and the JSON Schema
(``json_schema``), so neither can drift from the validation. The tables themselves live in
``policy`` (a target's tuning knobs) and ``fields`` (everything else).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from predictive_scaler.config.durations import format_duration, parse_duration
from predictive_scaler.config.errors import _Ctx, _Invalid, _short_repr

T = TypeVar("T")

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
    """Range the parser enforces (durations in seconds); read by ``json_schema``."""
    exclusive: bool = False
    """``bounds`` exclude their ends (a number field only)."""
    choices: tuple[str, ...] = ()
    """Values the parser accepts, when it is a choice; read by ``json_schema``."""


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


def _number_field(
    key: str,
    attr: str,
    default: float,
    bounds: tuple[float, float],
    doc: str,
    *,
    exclusive: bool = False,
    rule: str | None = None,
) -> _Field[float]:
    """A number (an integer counts) in ``[low, high]``, or in ``(low, high)`` when
    ``exclusive``; ``rule`` replaces the generated rule text."""
    low, high = bounds
    if rule is None:
        span = (
            f"greater than {low:g} and less than {high:g}"
            if exclusive
            else f"from {low:g} to {high:g}"
        )
        rule = f"must be a number {span}"
    text = rule

    def parse(value: object, ctx: _Ctx, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(text)
        if not (low < value < high if exclusive else low <= value <= high):
            raise _Invalid(text)
        return float(value)

    return _Field(
        key, "number", default, rule, doc, parse, attr, bounds=(low, high), exclusive=exclusive
    )


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


# ---- checks every section shares -------------------------------------------------------------

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
