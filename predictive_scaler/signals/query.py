"""Any PromQL, taken as the demand as it is (request rate, token throughput...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from predictive_scaler.demand import compute_demand
from predictive_scaler.signals.kind import FloatArray, KindQuery, SignalSpec

__all__ = ["KIND"]


class QueryKind:
    name: Final = "query"
    summary: Final = "`query` as it is, in units of the per-pod target; no correction"
    keys: Final = ("query",)
    required: Final = ("query",)
    together: Final = ()
    preset_keys: Final = ("query", "hpaMetric")

    def queries(self, signal: SignalSpec) -> tuple[KindQuery, ...]:
        assert signal.query is not None  # the loader requires it for this kind
        return (KindQuery("demand", signal.query),)

    def compute(
        self, first: FloatArray, others: Mapping[str, FloatArray]
    ) -> tuple[FloatArray, str | None]:
        return compute_demand(first), None


KIND: Final = QueryKind()
