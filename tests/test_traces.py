"""Trace files: seconds or ISO-8601 times, gzip, gaps, and clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from predictive_scaler.traces import TraceError, load_trace

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"


def test_seconds_with_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,value\n0,1\n60,2\n180,4\n240,5\n")
    trace = load_trace(path)
    assert trace.step_seconds == 60
    assert np.isnan(trace.values[2])


def test_iso_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(
        gzip.compress(b"timestamp,value\n2026-01-01T00:00:00Z,3\n2026-01-01T00:01:00Z,4\n")
    )
    trace = load_trace(path)
    assert trace.step_seconds == 60
    np.testing.assert_array_equal(trace.values, [3, 4])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "file is empty"),
        ("time,value\n0,1\n", "header must have 'timestamp'"),
        ("timestamp,value\n0,1\n60,abc\n", ":3: cannot parse row"),
        ("timestamp,value\n0,1\n60,-2\n", "negative values"),
        ("timestamp,value\n0,1\n", "at least two rows"),
        ("timestamp,value\n2026-01-01T00:00:00,1\n2026-01-01T00:01:00,2\n", "no time zone"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TraceError, match=message):
        load_trace(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(tmp_path / "nope.csv")


def test_shared_nasa_trace_loads() -> None:
    trace = load_trace(SHARED / "nasa_http_1995-08_1min.csv.gz")
    assert trace.step_seconds == 60
    assert len(trace.values) == 44_640
