"""Signal kinds, one a module (KEDA's scalers), and the registry that names them.

A signal's ``kind`` (YAML) picks one; the configuration accepts exactly the names below, the
live loop, the what-if backtest, batching and ``recommend`` read the queries it declares.
Adding a kind is one new module here and one line in :data:`SIGNAL_KINDS` (see
docs/configuration.md, "Adding a signal kind"). Pure: no I/O, no logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from predictive_scaler.signals import in_flight, kv_cache, query
from predictive_scaler.signals.kind import KindQuery, SignalKind, SignalSpec

__all__ = [
    "DEFAULT_KIND",
    "SIGNAL_KINDS",
    "KindQuery",
    "SignalKind",
    "SignalSpec",
    "demand_template",
    "kind_of",
]

SIGNAL_KINDS: Final[Mapping[str, SignalKind]] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            kv_cache.KIND,
            query.KIND,
            in_flight.KIND,
        )
    }
)
"""Every kind by its YAML name, in the order the reference lists them."""

DEFAULT_KIND: Final = kv_cache.KIND.name
"""The kind of a signal that names none."""


def kind_of(signal: SignalSpec) -> SignalKind:
    """The kind of ``signal`` (the loader accepts only registered names)."""
    return SIGNAL_KINDS[signal.kind]


def demand_template(signal: SignalSpec) -> str:
    """The template of the signal's demand query: the first it declares."""
    return kind_of(signal).queries(signal)[0].template
