"""What a range query answered, as a value: its status, the per-step sum over the series,
and the per-group answers of a batched query; and the JSON of Prometheus' HTTP API turned
into these.

PURE: numpy arithmetic on parsed JSON, no I/O, no event loop, no logger, no client library.
:class:`~predictive_scaler.prometheus.PrometheusSource` asks, this module judges the answer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "AnswerShapeError",
    "GroupedRanges",
    "RangeResult",
    "RangeStatus",
    "Series",
    "SeriesSums",
    "empty_range",
    "error_range",
    "freeze_range",
    "frozen_array",
    "parse_instant",
    "parse_matrix",
]


class RangeStatus(enum.Enum):
    """Outcome of a range query."""

    OK = "ok"
    """Every step has a finite value and every series has a sample at every step."""
    EMPTY = "empty"
    """The query matched no series."""
    PARTIAL = "partial"
    """Values came back, but some steps are NaN or missing in some series (see message)."""
    ERROR = "error"
    """No usable answer: unreachable, timed out, HTTP error, bad query, invalid JSON."""


@dataclass(frozen=True, eq=False)
class RangeResult:
    """A range query's answer on the regular grid `start, start + step, ... <= end`.

    `values` is the per-step sum over all returned series (the demand is an aggregate); a
    step is NaN when no series has a sample there or when a sample at it is NaN/Inf. A series
    missing at a step where others have samples is summed over the series present (a pod that
    did not exist held no cache) and the result is PARTIAL. The arrays are read-only.
    """

    status: RangeStatus
    timestamps: npt.NDArray[np.float64]
    """Unix seconds of the grid."""
    values: npt.NDArray[np.float64]
    message: str = ""
    """One line: why the status is not OK, or a short summary."""
    series_count: int = 0
    unreachable: bool = False
    """ERROR only: the server could not be reached or did not answer in time (not a refusal
    of this query), so asking again at once, or in parts, would only wait again."""

    @property
    def ok(self) -> bool:
        return self.status is RangeStatus.OK


@dataclass(frozen=True, eq=False)
class GroupedRanges:
    """A grouped range answer: one `RangeResult` per label-value tuple that had series."""

    grid: npt.NDArray[np.float64]
    groups: Mapping[tuple[str, ...], RangeResult]

    def get(self, key: tuple[str, ...], default: RangeResult | None = None) -> RangeResult:
        """The group's result; EMPTY (as the per-target query would be) when it had none.
        The EMPTY results of one answer are one shared object (they are read-only)."""
        found = self.groups.get(key)
        if found is not None:
            return found
        if default is not None:
            return default
        empty: RangeResult | None = self.__dict__.get("_empty")
        if empty is None:
            empty = empty_range(self.grid)
            object.__setattr__(self, "_empty", empty)
        return empty


def freeze_range(
    status: RangeStatus,
    timestamps: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    message: str,
    series_count: int,
) -> RangeResult:
    return RangeResult(
        status, frozen_array(timestamps), frozen_array(values), message, series_count
    )


def frozen_array(array: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """A read-only float64 array: ``array`` itself when it already is one (so the groups of
    a batched answer share one grid instead of a copy each), else a frozen copy."""
    if array.dtype == np.float64 and not array.flags.writeable:
        return array
    out = np.array(array, dtype=np.float64)
    out.setflags(write=False)
    return out


def error_range(
    grid: npt.NDArray[np.float64], message: str, *, unreachable: bool = False
) -> RangeResult:
    frozen = frozen_array(grid)
    values = frozen_array(np.full(grid.shape, np.nan))
    return RangeResult(RangeStatus.ERROR, frozen, values, message, 0, unreachable)


def empty_range(grid: npt.NDArray[np.float64]) -> RangeResult:
    return freeze_range(
        RangeStatus.EMPTY, grid, np.full(grid.shape, np.nan), "query returned no series", 0
    )


# ---------------------------------------------------------------------------- parsing


class AnswerShapeError(ValueError):
    """The JSON answer does not have the shape of a Prometheus API result."""


Series = tuple[tuple[tuple[str, str], ...], npt.NDArray[np.float64], npt.NDArray[np.float64]]


def parse_matrix(result: Any) -> list[Series]:
    if not isinstance(result, list):
        raise AnswerShapeError("range result is not a list of series")
    parsed: list[Series] = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("values"), list):
            raise AnswerShapeError("a series has no 'values' list")
        metric = item.get("metric") or {}
        if not isinstance(metric, dict):
            raise AnswerShapeError("a series' 'metric' is not an object")
        labels = tuple(sorted((str(k), str(v)) for k, v in metric.items()))
        try:
            ts = np.array([float(p[0]) for p in item["values"]], dtype=np.float64)
            vs = np.array([float(p[1]) for p in item["values"]], dtype=np.float64)
        except (TypeError, ValueError, IndexError, KeyError):
            raise AnswerShapeError("a sample is not a [timestamp, value] pair") from None
        parsed.append((labels, ts, vs))
    return parsed


def parse_instant(result: Any) -> list[float]:
    """Samples of a vector result, or the one value of a scalar result."""
    try:
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
            return [float(result[1])]  # resultType scalar: [timestamp, "value"]
        if not isinstance(result, list):
            raise AnswerShapeError("instant result is neither a vector nor a scalar")
        return [float(item["value"][1]) for item in result]
    except (TypeError, ValueError, IndexError, KeyError):
        raise AnswerShapeError("instant result is neither a vector nor a scalar") from None


class SeriesSums:
    """Per-step sums of the series of one group, and what was missing or not finite."""

    def __init__(self, n_steps: int) -> None:
        self.n_steps = n_steps
        self.sums = np.zeros(n_steps)
        self.present = np.zeros(n_steps, dtype=np.int64)
        self.nonfinite_steps = np.zeros(n_steps, dtype=bool)
        self.nonfinite_samples = 0
        self.series_keys: set[tuple[tuple[str, str], ...]] = set()

    def add(
        self,
        labels: tuple[tuple[str, str], ...],
        index: npt.NDArray[np.int64],
        samples: npt.NDArray[np.float64],
    ) -> None:
        self.series_keys.add(labels)
        keep = (index >= 0) & (index < self.n_steps)
        index, vs = index[keep], samples[keep]
        finite = np.isfinite(vs)
        np.add.at(self.sums, index[finite], vs[finite])
        np.add.at(self.present, index, 1)
        self.nonfinite_steps[index[~finite]] = True
        self.nonfinite_samples += int((~finite).sum())

    def result(self, grid: npt.NDArray[np.float64]) -> RangeResult:
        n_steps, present = self.n_steps, self.present
        n_series = len(self.series_keys)
        if n_series == 0:
            return empty_range(grid)
        values = np.where((present > 0) & ~self.nonfinite_steps, self.sums, np.nan)
        problems = []
        no_sample = int((present == 0).sum())
        if no_sample:
            problems.append(f"{no_sample} of {n_steps} steps have no sample")
        some_missing = int(((present > 0) & (present < n_series)).sum())
        if some_missing:
            problems.append(
                f"{some_missing} steps lack a sample in some of the {n_series} series "
                "(summed over the series present)"
            )
        if self.nonfinite_samples:
            problems.append(
                f"{self.nonfinite_samples} NaN/Inf samples made "
                f"{int(self.nonfinite_steps.sum())} steps NaN"
            )
        if problems:
            return freeze_range(RangeStatus.PARTIAL, grid, values, "; ".join(problems), n_series)
        summary = f"{n_series} series summed over {n_steps} steps"
        return freeze_range(RangeStatus.OK, grid, values, summary, n_series)
