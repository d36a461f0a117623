"""PromQL for the target's pods: a Kubernetes label selector as Prometheus matchers.

String work only, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

from predictive_scaler.prometheus import escape_promql_string

__all__ = ["prometheus_label_name", "selector_matchers"]

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


def selector_matchers(selector: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """A serialized Kubernetes label selector (a scale's ``status.selector``, e.g.
    ``app=nim,tier in (a,b),!canary``) as PromQL: equality requirements as labels, the others
    as rendered matchers. ``ValueError`` for text that is not a selector."""
    equal: dict[str, str] = {}
    other: list[str] = []
    position = 0
    text = selector.strip()
    while position < len(text):
        match = _SELECTOR_REQUIREMENT.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"not a label selector: {selector!r}")
        position = match.end()
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
