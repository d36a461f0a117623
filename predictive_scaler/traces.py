"""Reading demand traces from CSV: ``timestamp,value`` with seconds or ISO-8601 times."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.series import regularize

FloatArray = npt.NDArray[np.float64]


class TraceError(ValueError):
    """The trace file cannot be read; the message names the file, line and problem."""


@dataclass(frozen=True)
class Trace:
    """A regular series: NaN where the file has no row for a step."""

    name: str
    start_seconds: float
    step_seconds: float
    values: FloatArray

    @property
    def span_seconds(self) -> float:
        return len(self.values) * self.step_seconds


def load_trace(path: str | Path, column: str = "value") -> Trace:
    """Load a CSV (optionally .gz) with a ``timestamp`` column and a value column."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise TraceError(f"{path}: not a valid gzip file: {exc}") from None
    reader = csv.reader(io.StringIO(raw.decode("utf-8-sig")))
    header = next(reader, None)
    if header is None:
        raise TraceError(f"{path}: file is empty")
    names = [h.strip() for h in header]
    if "timestamp" not in names or column not in names:
        raise TraceError(
            f"{path}: header must have 'timestamp' and '{column}' columns, got {','.join(names)}"
        )
    ti, vi = names.index("timestamp"), names.index(column)
    times: list[float] = []
    values: list[float] = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            times.append(_parse_time(row[ti]))
            values.append(float(row[vi]) if row[vi].strip() else float("nan"))
        except (ValueError, IndexError) as exc:
            raise TraceError(f"{path}:{line}: cannot parse row {row!r}: {exc}") from None
    if len(times) < 2:
        raise TraceError(f"{path}: needs at least two rows, has {len(times)}")
    arr = np.asarray(values)
    if np.isinf(arr).any():
        raise TraceError(f"{path}: has infinite values")
    if (arr[np.isfinite(arr)] < 0).any():
        raise TraceError(f"{path}: has negative values; demand cannot be negative")
    start, step, grid = regularize(np.asarray(times), arr)
    return Trace(path.name, start, step, grid)


def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"ISO-8601 timestamp {text!r} has no time zone")
    return parsed.timestamp()
