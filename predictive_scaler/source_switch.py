"""The Prometheus source the reconcilers read through, swapped in place when a reload changes
how to reach Prometheus, so every reconciler keeps its state across such a reload."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from predictive_scaler.config import PrometheusConfig
from predictive_scaler.prometheus import (
    GroupedRanges,
    PrometheusSettings,
    PrometheusSource,
    RangeResult,
)
from predictive_scaler.settings import prometheus_settings

__all__ = ["SourceSwitch"]


class SourceSwitch:
    """The current Prometheus source; swapped when the configuration changes how to reach it,
    so reconcilers keep their state across such a reload."""

    def __init__(self, override_url: str | None) -> None:
        self.override_url = override_url
        self.settings: PrometheusSettings | None = None
        self.source: PrometheusSource | None = None

    def configure(self, config: PrometheusConfig | None) -> None:
        settings = prometheus_settings(config, self.override_url)
        if settings is None:
            raise ValueError("no Prometheus URL in the configuration nor on the command line")
        if self.source is not None and repr(settings) == repr(self.settings):
            return
        old, self.source, self.settings = self.source, PrometheusSource(settings), settings
        if old is not None:
            old.close()

    async def fetch_range(
        self, query: str, start: datetime, end: datetime, step_seconds: float
    ) -> RangeResult:
        if self.source is None:
            raise RuntimeError("no Prometheus configured")
        return await self.source.fetch_range(query, start, end, step_seconds)

    async def fetch_range_grouped(
        self,
        query: str,
        by: Sequence[str],
        start: datetime,
        end: datetime,
        step_seconds: float,
    ) -> RangeResult | GroupedRanges:
        if self.source is None:
            raise RuntimeError("no Prometheus configured")
        return await self.source.fetch_range_grouped(query, by, start, end, step_seconds)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
