"""Trace files: seconds or ISO-8601 times, gzip, gaps, and clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from predictive_scaler.traces import (
    TraceError,
    TraceGaps,
    documented_gaps,
    load_documented_trace,
    load_trace,
)

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


# -- collection gaps the trace's documentation names: missing samples, not zero demand ------

DOC = """## Traces

### steady_1min.csv
- Shape: steady. **3 windows are 0. These are collection gaps, not idle periods.** The gaps
  are, as [start, end) in seconds: 120–240 and 300–360. Mask them when fitting.

### idle_1min.csv
- Shape: on/off; 40% of minutes have no arrivals.

### archive_1min.csv
- Shape: 2 minutes are 0. These are collection gaps in the archive, not idle periods.
- steady_1min.csv is also mentioned here, in another file's section.
"""


def test_the_documentation_says_which_zeros_are_gaps() -> None:
    assert documented_gaps(DOC, "steady_1min.csv") == TraceGaps(((120.0, 240.0), (300.0, 360.0)))
    assert documented_gaps(DOC, "archive_1min.csv") == TraceGaps(zeros=True)
    # Zeros the documentation does not call gaps are demand: nothing is masked.
    assert documented_gaps(DOC, "idle_1min.csv") == TraceGaps()
    assert documented_gaps(DOC, "unknown.csv") == TraceGaps()


def test_a_documented_gap_loads_as_missing(tmp_path: Path) -> None:
    rows = "".join(f"{60 * i},{0 if i in (2, 3, 5, 7) else 10}\n" for i in range(9))
    for name in ("steady_1min.csv", "archive_1min.csv", "idle_1min.csv"):
        (tmp_path / name).write_text("timestamp,value\n" + rows)
    (tmp_path / "SOURCES.md").write_text(DOC)
    steady = load_documented_trace(tmp_path / "steady_1min.csv").values
    # [120, 240) and [300, 360) are steps 2, 3 and 5; the zero at 7 is not documented.
    assert list(np.flatnonzero(np.isnan(steady))) == [2, 3, 5]
    assert steady[7] == 0
    archive = load_documented_trace(tmp_path / "archive_1min.csv").values
    assert list(np.flatnonzero(np.isnan(archive))) == [2, 3, 5, 7]
    idle = load_documented_trace(tmp_path / "idle_1min.csv").values
    assert not np.isnan(idle).any()
    # Without a SOURCES.md beside it, a file loads as it is.
    (tmp_path / "SOURCES.md").unlink()
    assert not np.isnan(load_documented_trace(tmp_path / "steady_1min.csv").values).any()


@pytest.mark.parametrize(
    ("name", "missing", "zeros_left"),
    [
        # SOURCES.md: "101 windows (5.0%) are 0 or below 1% of the median (84 of them exactly
        # 0). These are collection gaps", listed as eight [start, end) ranges.
        ("servegen_m-mid_10min.csv", 101, 0),
        # "592 minutes are 0 ... These are collection gaps in the archive".
        ("twitter_stream_2021-08_1min.csv", 592, 0),
        # The Hurricane Erin outage is documented as an outage, not a collection gap.
        ("nasa_http_1995-08_1min.csv.gz", 0, 2_775),
        ("nab_nyc_taxi_passengers_30min.csv", 0, 0),
    ],
)
def test_the_shared_traces_gaps_are_what_their_documentation_says(
    name: str, missing: int, zeros_left: int
) -> None:
    values = load_documented_trace(SHARED / name).values
    assert int(np.isnan(values).sum()) == missing
    assert int((values == 0).sum()) == zeros_left
