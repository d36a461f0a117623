"""What a kind of demand signal declares: its queries, and how their answers become demand.

Pure: no I/O, no logging. The reading (one range query per declared query, the freshness
rule on the first, failures and partial answers) is the same for every kind and lives in
:mod:`predictive_scaler.demand_query`; a kind only names its queries and computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["FloatArray", "KindQuery", "SignalKind", "SignalSpec"]

FloatArray = npt.NDArray[np.float64]


class SignalSpec(Protocol):
    """The configured keys a kind reads (met by :class:`predictive_scaler.config.Signal`)."""

    @property
    def kind(self) -> str: ...
    @property
    def query(self) -> str | None: ...
    @property
    def queue_query(self) -> str | None: ...
    @property
    def running_query(self) -> str | None: ...


@dataclass(frozen=True)
class KindQuery:
    """One range query of a signal, a template that may contain ``${matchers}``."""

    role: str
    """What the answer is (``queue``, ``running``...); names the query in messages."""
    template: str
    """The PromQL template."""


class SignalKind(Protocol):
    """One kind of signal (KEDA's scaler): one module each, registered in
    :data:`predictive_scaler.signals.SIGNAL_KINDS`."""

    @property
    def name(self) -> str:
        """The YAML value of a signal's ``kind``."""
        ...

    @property
    def summary(self) -> str:
        """One sentence for the configuration reference: what the demand is."""
        ...

    @property
    def keys(self) -> tuple[str, ...]:
        """The YAML query keys it reads; any other query key given is an error."""
        ...

    @property
    def required(self) -> tuple[str, ...]:
        """Of :attr:`keys`, those that must be set (by the signal or its preset)."""
        ...

    @property
    def together(self) -> tuple[tuple[str, str], ...]:
        """``(a, b)``: ``b`` is required when ``a`` is set."""
        ...

    @property
    def preset_keys(self) -> tuple[str, ...]:
        """The keys a ``preset`` fills for this kind (``hpaMetric`` among them when the
        preset's HPA metric measures this kind's demand)."""
        ...

    def queries(self, signal: SignalSpec) -> tuple[KindQuery, ...]:
        """The queries to read, the demand's own first: the freshness rule, the newest
        sample and the count of reporting pods are read on it."""
        ...

    def compute(
        self, first: FloatArray, others: Mapping[str, FloatArray]
    ) -> tuple[FloatArray, str | None]:
        """Demand per step from the first query's values (NaN where no new sample) and the
        others' by role (NaN where absent), and why it is only a lower bound (or None)."""
        ...
