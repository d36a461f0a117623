"""PromQL text: query templates rendered safely, label selectors as matchers, and the
batched forms of the presets' query shapes.

PURE: string work, no I/O, no event loop, no logger, no client library. Untrusted values
(namespaces, label values, a scale target's selector) only ever enter a query escaped for
the string literal they sit in (:func:`escape_promql_string`), and in a batched regex also
RE2-escaped (:func:`escape_re2_literal`).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

from predictive_scaler.pod_overlap import Requirement

__all__ = [
    "batch_shape",
    "batchable_metrics",
    "escape_promql_string",
    "escape_re2_literal",
    "fresh_samples_template",
    "latest_sample_template",
    "prometheus_label_name",
    "render_batch_query",
    "render_matchers",
    "render_query",
    "reporting_pods_template",
    "selector_matchers",
    "selector_requirements",
]

_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# ---------------------------------------------------------------------------- templates


_NAMED_ESCAPES: Final = {
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _promql_escapes(quote: str) -> dict[int, str]:
    table = {ord(ch): escaped for ch, escaped in _NAMED_ESCAPES.items()}
    for code in (*range(0x20), 0x7F):
        table.setdefault(code, f"\\u{code:04x}")
    table[ord(quote)] = "\\" + quote
    return table


# One `str.translate` table per quote: a batched query escapes thousands of characters a
# cycle, and a per-character Python loop was a visible share of a steady cycle's CPU.
_PROMQL_ESCAPES: Final = {quote: _promql_escapes(quote) for quote in ('"', "'")}


def escape_promql_string(value: str, quote: str = '"') -> str:
    """Escape `value` as the body of a PromQL string literal delimited by `quote` (" or ').

    Backslash, the quote character and control characters are escaped, so the value can
    never end the literal: `"} or vector(1) #` stays a label value.
    """
    table = _PROMQL_ESCAPES.get(quote)
    if table is None:
        raise ValueError("only double- and single-quoted PromQL strings can carry escapes")
    return value.translate(table)


def render_matchers(labels: Mapping[str, str]) -> str:
    """Render equality matchers `k1="v1",k2="v2"` (in the mapping's order).

    Label names must match `[a-zA-Z_][a-zA-Z0-9_]*`; values are escaped. Pass the result to
    `render_query` as a raw fragment, e.g. `raw={"matchers": render_matchers(...)}`.
    """
    parts = []
    for name, value in labels.items():
        if not _LABEL_NAME.match(name):
            raise ValueError(f"invalid label name {name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
        parts.append(f'{name}="{escape_promql_string(value)}"')
    return ",".join(parts)


class _QuoteTracker:
    """Tracks whether a position in PromQL text is inside a string literal or a comment."""

    def __init__(self) -> None:
        self.quote: str | None = None
        self.escaped = False
        self.comment = False

    def feed(self, text: str) -> None:
        for ch in text:
            if self.comment:
                self.comment = ch != "\n"
            elif self.quote is None:
                if ch in "\"'`":
                    self.quote = ch
                elif ch == "#":
                    self.comment = True
            elif self.escaped:
                self.escaped = False
            elif ch == "\\" and self.quote != "`":
                self.escaped = True
            elif ch == self.quote:
                self.quote = None


def render_query(
    template: str,
    variables: Mapping[str, str],
    *,
    raw: Mapping[str, str] | None = None,
) -> str:
    """Substitute `${name}` (or `$name`; `$$` is a literal `$`) placeholders in a PromQL template.

    `variables` are untrusted values (namespace, pod names): each placeholder for one must sit
    inside a double- or single-quoted string literal of the template, e.g.
    `namespace="${namespace}"`, and the value is escaped for that literal, so it cannot
    inject PromQL. `raw` holds trusted, pre-rendered fragments inserted verbatim outside string
    literals, typically `raw={"matchers": render_matchers(labels)}` for `metric{${matchers}}`.
    An unknown placeholder, a variable placeholder outside a string literal (or inside a
    backtick string, which has no escapes) and a raw placeholder inside one raise ValueError.
    """
    raw = raw or {}
    both = sorted(set(variables) & set(raw))
    if both:
        raise ValueError(f"placeholders given both as variables and raw: {', '.join(both)}")
    tracker = _QuoteTracker()
    out: list[str] = []
    position = 0
    for match in string.Template.pattern.finditer(template):
        literal = template[position : match.start()]
        tracker.feed(literal)
        out.append(literal)
        position = match.end()
        if match.group("escaped") is not None:
            tracker.feed("$")
            out.append("$")
            continue
        name = match.group("named") or match.group("braced")
        if name is None:
            raise ValueError(f"invalid placeholder at offset {match.start()} of the query template")
        if name in raw:
            if tracker.quote is not None or tracker.comment:
                raise ValueError(
                    f"raw placeholder ${{{name}}} must not be inside a string or comment"
                )
            tracker.feed(raw[name])
            out.append(raw[name])
        elif name in variables:
            if tracker.quote not in ('"', "'") or tracker.comment:
                raise ValueError(
                    f"placeholder ${{{name}}} must be inside a quoted PromQL string, "
                    f'e.g. label="${{{name}}}"'
                )
            if tracker.escaped:
                raise ValueError(f"placeholder ${{{name}}} must not follow a backslash")
            out.append(escape_promql_string(variables[name], tracker.quote))
        else:
            known = ", ".join(sorted([*variables, *raw])) or "none"
            raise ValueError(f"unknown placeholder ${{{name}}} in query template (known: {known})")
    out.append(template[position:])
    return "".join(out)


# ---------------------------------------------------------------------------- batched shapes

_METRIC: Final = r"([a-zA-Z_:][a-zA-Z0-9_:]*)"
_SELECTOR: Final = _METRIC + r"\s*\{\s*\$\{matchers\}\s*\}"
_RANGE: Final = r"([1-9][0-9]*ms)"
_OR: Final = re.compile(r"\s*or\s+")
_TERMS: Final = {
    "sum": re.compile(rf"\s*{_SELECTOR}\s*"),
    "count": re.compile(rf"\s*{_SELECTOR}\s*"),
    "latest": re.compile(rf"\s*timestamp\s*\(\s*{_SELECTOR}\s*\)\s*"),
    "fresh": re.compile(rf"\s*count_over_time\s*\(\s*{_SELECTOR}\s*\[\s*{_RANGE}\s*\]\s*\)\s*"),
}
"""One term of each shape's `or`: the metric (group 1) and, for ``fresh``, the range."""
_OUTER: Final = {
    "sum": re.compile(r"\s*sum\s*\((.*)\)\s*", re.DOTALL),
    "count": re.compile(r"\s*count\s*\((.*)\)\s*", re.DOTALL),
    "latest": re.compile(r"\s*max\s*\((.*)\)\s*", re.DOTALL),
    "fresh": re.compile(r"\s*sum\s*\((.*)\)\s*", re.DOTALL),
}
_FRESH_KIND: Final = re.compile(r"^fresh\[([1-9][0-9]*ms)\]$")


def _or_terms(template: str, shape: str) -> list[re.Match[str]] | None:
    """The terms of `template` when it is `<outer>(T1 or T2 ...)` of `shape`, each a match
    of that shape's term; None when it is not. A bare `or` only: `or on(...)` and
    `or ignoring(...)` change which series it keeps, so they are not this shape."""
    outer = _OUTER[shape].fullmatch(template)
    if outer is None:
        return None
    inner, term = outer.group(1), _TERMS[shape]
    terms: list[re.Match[str]] = []
    position = 0
    while True:
        match = term.match(inner, position)
        if match is None:
            return None
        terms.append(match)
        position = match.end()
        separator = _OR.match(inner, position)
        if separator is None:
            break
        position = separator.end()
    return terms if position == len(inner) else None


def _names(terms: Sequence[re.Match[str]]) -> tuple[str, ...]:
    """The terms' metric names, each once, in order (`M or M` is `M`)."""
    return tuple(dict.fromkeys(match.group(1) for match in terms))


# Cached: pure functions of a template, which every target of a signal shares, asked
# several times per target and cycle (a measured share of a steady cycle at 1,000 targets).
@functools.lru_cache(maxsize=1024)
def batchable_metrics(template: str) -> tuple[str, ...] | None:
    """The metric names when `template` is of the presets' shape, a sum over one metric or
    over an `or` of several with the same selector, `sum(M1{${matchers}} or
    M2{${matchers}} ...)` (the `vllm` preset reads either of vLLM's KV-cache names); else
    None. Only such queries are answered for many targets at once, and only they have
    the derived queries below (sample timestamps, fresh samples, reporting pods).

    PromQL's `or` matches series on their labels without `__name__`, so a pod exporting
    both names is summed once (the first name's series); every derived query keeps the
    `or` in the same order, so each sees the same series the sum does."""
    terms = _or_terms(template, "sum")
    return None if terms is None else _names(terms)


def _selector(metric: str) -> str:
    return f"{metric}{{${{matchers}}}}"


def latest_sample_template(template: str) -> str | None:
    """For a query of the presets' shape, `sum(M1{${matchers}} or ...)`, the query of its
    newest sample's own timestamp: `max(timestamp(M1{${matchers}}) or ...)`.

    `timestamp()` of a selector gives the time of the sample the lookback picked, not the
    evaluation time (of any other expression, an `or` included, it gives the evaluation
    time: hence one `timestamp()` per name). Ask it at one step only: over a long range
    Prometheus spends about a second per series on it (7 days at 1 m), so a batch of
    targets' first fetch would time out. None for other shapes."""
    metrics = batchable_metrics(template)
    if metrics is None:
        return None
    return f"max({' or '.join(f'timestamp({_selector(m)})' for m in metrics)})"


def fresh_samples_template(template: str, step_seconds: float) -> str | None:
    """For a query of the presets' shape, `sum(M1{${matchers}} or ...)`, the number of
    samples its series took in each step's own interval, `(t - step, t]`:
    `sum(count_over_time(M1{${matchers}}[<step - 1 ms>]) or ...)`.

    A step where it is 0 or absent only holds what Prometheus' lookback repeats of an older
    sample: a copy, not new data. As cheap as the sum itself over a long range (unlike
    `timestamp()`), so a whole batch's first fetch can afford it. The range is one
    millisecond short of the step because Prometheus 2 includes the range's left end, which
    is the previous step's own time. `count_over_time` drops the name, so the `or` counts a
    pod exporting several names once. None for other shapes (freshness is then judged on
    the grid)."""
    metrics = batchable_metrics(template)
    window_ms = round(step_seconds * 1000) - 1
    if metrics is None or window_ms < 1:
        return None
    terms = " or ".join(f"count_over_time({_selector(m)}[{window_ms}ms])" for m in metrics)
    return f"sum({terms})"


def reporting_pods_template(template: str) -> str | None:
    """For a query of the presets' shape, the number of series (pods) its sum is over:
    `count(M1{${matchers}} or ...)` (a pod exporting several names once); None for other
    shapes."""
    metrics = batchable_metrics(template)
    if metrics is None:
        return None
    return f"count({' or '.join(_selector(m) for m in metrics)})"


@functools.lru_cache(maxsize=1024)
def batch_shape(template: str) -> tuple[str, tuple[str, ...]] | None:
    """(kind, metric names) of a template a batched query can answer: kind ``sum`` for the
    presets' `sum(M1{${matchers}} or ...)`, ``latest`` for :func:`latest_sample_template`,
    ``count`` for :func:`reporting_pods_template`, ``fresh[<range>]`` for
    :func:`fresh_samples_template` (one range in every term); None for any other shape.
    Targets batch together only when both are equal: the names are the whole tuple."""
    metrics = batchable_metrics(template)
    if metrics is not None:
        return "sum", metrics
    fresh = _or_terms(template, "fresh")
    if fresh is not None:
        ranges = {match.group(2) for match in fresh}
        return (f"fresh[{ranges.pop()}]", _names(fresh)) if len(ranges) == 1 else None
    for kind in ("latest", "count"):
        terms = _or_terms(template, kind)
        if terms is not None:
            return kind, _names(terms)
    return None


_RE2_ESCAPES: Final = {
    code: "\\" + chr(code) for code in range(0x80) if not (chr(code).isalnum() or chr(code) == "_")
}


def escape_re2_literal(value: str) -> str:
    """`value` as an RE2 pattern matching exactly that text: every ASCII character that is
    not a letter, a digit or `_` gets a backslash (RE2 reads those as themselves)."""
    return value.translate(_RE2_ESCAPES)


def render_batch_query(
    metrics: str | Sequence[str],
    label_sets: Sequence[Mapping[str, str]],
    *,
    kind: str = "sum",
) -> tuple[str, tuple[str, ...]]:
    """One query answering `sum(M1{<labels>} or M2{<labels>} ...)` (kind ``latest``:
    `max(timestamp(M1{...}) or ...)`, ``count``: `count(M1{...} or ...)`, ``fresh[R]``:
    `sum(count_over_time(M1{...}[R]) or ...)`, see :func:`batch_shape`) for each of
    `label_sets` (which share their label names): `sum by (<names>) (M1{name=~"v1|v2",...}
    or ...)` and the label names to split the answer by (`GroupedRanges.get` with the values
    in this order). `metrics` is the names (a str is one name).

    The `or` is evaluated on the series' whole label sets before they are grouped, so each
    target's group holds what its own query would. The regex alternatives may match series
    of combinations no target asked for; those come back as groups nobody reads. Values are
    RE2-escaped, then PromQL-escaped.
    """
    names_of_metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not names_of_metrics:
        raise ValueError("no metric to batch")
    if not label_sets:
        raise ValueError("no label sets to batch")
    names = tuple(label_sets[0])
    for labels in label_sets:
        if tuple(labels) != names:
            raise ValueError("batched label sets must have the same label names in order")
    for name in names:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"invalid label name {name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
    matchers = []
    for name in names:
        values = sorted({labels[name] for labels in label_sets})
        pattern = "|".join(escape_re2_literal(v) for v in values)
        matchers.append(f'{name}=~"{escape_promql_string(pattern)}"')
    selectors = [f"{metric}{{{','.join(matchers)}}}" for metric in names_of_metrics]
    by = ", ".join(names)
    if kind == "latest":  # the newest sample's timestamp per target
        terms = " or ".join(f"timestamp({s})" for s in selectors)
        return f"max by ({by}) ({terms})", names
    fresh = _FRESH_KIND.match(kind)
    if fresh:  # the samples taken in each step's own interval, per target
        terms = " or ".join(f"count_over_time({s}[{fresh.group(1)}])" for s in selectors)
        return f"sum by ({by}) ({terms})", names
    if kind == "count":  # the series (pods) per target
        return f"count by ({by}) ({' or '.join(selectors)})", names
    if kind != "sum":
        raise ValueError(f"unknown batch kind {kind!r}")
    return f"sum by ({by}) ({' or '.join(selectors)})", names


# ---------------------------------------------------------------------------- selectors


_SELECTOR_REQUIREMENT: Final = re.compile(
    r"\s*(?:(?P<neg>!)\s*(?P<absent>[^\s!=,()]+)"
    r"|(?P<key>[^\s!=,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?)\s*(?:,|$)"
)


def prometheus_label_name(label: str) -> str:
    """A Kubernetes label key as Prometheus' Kubernetes discovery names it on a pod's series
    (``__meta_kubernetes_pod_label_<name>`` mapped by ``labelmap``): every character outside
    ``[a-zA-Z0-9_]`` becomes ``_`` (``app.kubernetes.io/name`` -> ``app_kubernetes_io_name``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _selector_terms(selector: str) -> Iterator[re.Match[str]]:
    """The requirements of a serialized label selector, one match each; ``ValueError`` at
    the first text that is not one."""
    position = 0
    text = selector.strip()
    while position < len(text):
        match = _SELECTOR_REQUIREMENT.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"not a label selector: {selector!r}")
        position = match.end()
        yield match


def selector_matchers(selector: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """A serialized Kubernetes label selector (a scale's ``status.selector``, e.g.
    ``app=nim,tier in (a,b),!canary``) as PromQL: equality requirements as labels, the others
    as rendered matchers. ``ValueError`` for text that is not a selector."""
    equal: dict[str, str] = {}
    other: list[str] = []
    for match in _selector_terms(selector):
        if match.group("neg"):
            other.append(f'{prometheus_label_name(match.group("absent"))}=""')
            continue
        name = prometheus_label_name(match.group("key"))
        op, value = match.group("op"), match.group("value")
        if op in ("=", "=="):
            equal[name] = value
        elif op == "!=":
            other.append(f'{name}!="{escape_promql_string(value)}"')
        elif match.group("set"):
            values = [v.strip() for v in match.group("values").split(",") if v.strip()]
            regex = "|".join(re.escape(v) for v in values)
            op_text = "=~" if match.group("set") == "in" else "!~"
            other.append(f'{name}{op_text}"{escape_promql_string(regex)}"')
        else:
            other.append(f'{name}!=""')  # the key exists
    return equal, tuple(other)


def selector_requirements(selector: str) -> tuple[Requirement, ...]:
    """A serialized Kubernetes label selector as requirements on the series' labels (keys
    named as :func:`prometheus_label_name` names them; a missing label is the empty value,
    as PromQL reads it), for :mod:`~predictive_scaler.pod_overlap`. ``ValueError`` for text
    that is not a selector."""
    found: list[Requirement] = []
    for match in _selector_terms(selector):
        if match.group("neg"):
            found.append(Requirement(prometheus_label_name(match.group("absent")), _EMPTY))
            continue
        name = prometheus_label_name(match.group("key"))
        op, value = match.group("op"), match.group("value")
        if op in ("=", "=="):
            found.append(Requirement(name, frozenset({value})))
        elif op == "!=":
            found.append(Requirement(name, frozenset({value}), negated=True))
        elif match.group("set"):
            values = frozenset(v.strip() for v in match.group("values").split(",") if v.strip())
            found.append(Requirement(name, values, negated=match.group("set") == "notin"))
        else:
            found.append(Requirement(name, _EMPTY, negated=True))  # the key exists
    return tuple(found)


_EMPTY: Final = frozenset({""})
