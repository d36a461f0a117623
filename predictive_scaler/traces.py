"""Reading demand traces from CSV: ``timestamp,value`` with seconds or ISO-8601 times.

A step with no row, or an empty value, is missing (NaN). A zero-filled file cannot say which
of its zeros are collection gaps rather than idle periods; its documentation can, and
:func:`load_documented_trace` masks what a ``SOURCES.md`` beside the file calls collection
gaps (:func:`documented_gaps`), so a gap reaches the simulator as missing data, as a gap in
Prometheus does, not as zero demand.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.series import mask_ranges, regularize

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


@dataclass(frozen=True)
class TraceGaps:
    """Which steps of a zero-filled trace are collection gaps (missing, not zero demand)."""

    ranges: tuple[tuple[float, float], ...] = ()
    """``[start, end)`` in the file's own time (its ``timestamp`` column's seconds)."""
    zeros: bool = False
    """Every exact zero is a gap (the documentation says the file's zeros are)."""


_GAP_WORDS = re.compile(r"collection gaps?", re.IGNORECASE)
_RANGES = re.compile(r"\[start, end\)\s+in\s+seconds:\s*(.+?)(?:\.\s|\.$)", re.DOTALL)
_PAIR = re.compile(r"(\d+(?:\.\d+)?)\s*[\u2013-]\s*(\d+(?:\.\d+)?)")


def documented_gaps(doc: str, file_name: str) -> TraceGaps:
    """The collection gaps that ``doc`` (a trace directory's ``SOURCES.md``) states for
    ``file_name``: in the file's own section (the heading or top-level bullet that opens with
    its name, up to the next heading or the next file's bullet), a statement that some of
    its values are "collection gaps" with the gaps listed "as [start, end) in seconds: a-b,
    c-d" gives those ranges; without a list, every exact zero. Nothing else is a gap: zeros
    the documentation does not call gaps (or calls an outage) are demand."""
    section = _section(doc, file_name)
    if section is None or not _GAP_WORDS.search(section):
        return TraceGaps()
    listed = _RANGES.search(section)
    if listed is None:
        return TraceGaps(zeros=True)
    pairs = tuple((float(a), float(b)) for a, b in _PAIR.findall(listed.group(1)))
    return TraceGaps(ranges=pairs) if pairs else TraceGaps(zeros=True)


def _section(doc: str, file_name: str) -> str | None:
    lines = doc.splitlines()
    opener = re.compile(r"^(#+\s+|-\s+)`?" + re.escape(file_name) + r"\b")
    starts = [i for i, line in enumerate(lines) if opener.match(line)]
    if not starts:
        return None
    first = starts[0]
    heading = lines[first].startswith("#")
    end = len(lines)
    for i in range(first + 1, len(lines)):
        line = lines[i]
        # A heading section ends at the next heading; a bullet one also at the next
        # top-level bullet (another file's).
        if line.startswith("#") or (not heading and line.startswith("- ")):
            end = i
            break
    return "\n".join(lines[first:end])


def mask_gaps(trace: Trace, gaps: TraceGaps) -> Trace:
    """``trace`` with ``gaps`` set to NaN (missing)."""
    values = trace.values
    if gaps.ranges:
        values = mask_ranges(trace.start_seconds, trace.step_seconds, values, gaps.ranges)
    if gaps.zeros:
        values = np.where(values == 0, np.nan, values)
    return Trace(trace.name, trace.start_seconds, trace.step_seconds, values)


def load_documented_trace(path: str | Path, column: str = "value") -> Trace:
    """:func:`load_trace`, with the collection gaps a ``SOURCES.md`` in the same directory
    documents for this file masked as missing (none without one)."""
    path = Path(path)
    trace = load_trace(path, column)
    doc = path.parent / "SOURCES.md"
    try:
        text = doc.read_text(encoding="utf-8")
    except OSError:
        return trace
    return mask_gaps(trace, documented_gaps(text, path.name))


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
