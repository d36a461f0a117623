"""`backtest` with an objective: what headroom it would choose for this workload, and whether
that choice met the objective out of sample (issue 13 item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from predictive_scaler.cli import main


def write_trace(path: Path) -> None:
    # Four days at 10-minute steps: a quiet night and a noisy day, the same shape each day.
    rng = np.random.default_rng(11)
    hour = (np.arange(4 * 144) % 144) / 6.0
    values = (1 + 9 * np.clip(hour - 8, 0, 1) * np.clip(19 - hour, 0, 1)) * (
        1 + 0.25 * rng.standard_normal(hour.size)
    )
    start = 1_700_000_000
    rows = [f"{start + 600 * i},{max(v, 0.0):.4f}" for i, v in enumerate(values)]
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")


ARGS = ["--only", "scaling", "--no-frontier", "--quiet", "--model", "seasonal_naive"]


def test_backtest_with_a_shortfall_share_shows_the_choice_and_the_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, out = tmp_path / "t.csv", tmp_path / "r.json"
    write_trace(trace)
    argv = ["backtest", "--trace", str(trace), "--json", str(out), *ARGS]
    assert main([*argv, "--max-shortfall-share", "0.02"]) == 0
    report = json.loads(out.read_text())
    objective = report["objective"]
    assert objective["objective"] == {"maxShortfallShare": 0.02}
    # One choice per refit of the measured half (2 days, a refit every 6 h, plus the first).
    chosen = objective["chosen"]
    assert len(chosen) >= 8
    assert all(q in (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99) for q in chosen.values())
    run = report["scaling"]["objective"]
    measured = objective["measured_minutes"]
    assert measured == 2 * 1440
    assert objective["shortfall_share"] == pytest.approx(run["underprovisioned_minutes"] / measured)
    assert objective["met"] == (objective["shortfall_share"] <= 0.02)
    # What it would pick if turned on at the end of the trace, from its last history.
    now = objective["now"]
    assert now["quantile"] in (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
    assert len(now["candidates"]) == 8
    printed = capsys.readouterr().out
    assert "objective: at most 2% of minutes under-provisioned" in printed
    assert "out of sample" in printed
    assert f"would choose p{100 * now['quantile']:g} now" in printed


def test_backtest_with_a_price_and_without_an_objective(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, out = tmp_path / "t.csv", tmp_path / "r.json"
    write_trace(trace)
    argv = ["backtest", "--trace", str(trace), "--json", str(out), *ARGS]
    assert main([*argv, "--shortfall-price", "20"]) == 0
    report = json.loads(out.read_text())
    assert report["objective"]["objective"] == {"shortfallPrice": 20.0}
    assert report["objective"]["met"] is None
    assert "objective: an under-provisioned pod-minute costs 20 GPU-minutes" in (
        capsys.readouterr().out
    )
    # Default off: no objective run, no objective figures.
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert "objective" not in report
    assert set(report["scaling"]) == {"reactive", "predictive", "oracle"}


def test_backtest_rejects_two_objectives(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["backtest", "--max-shortfall-share", "0.01", "--shortfall-price", "3"])
    assert code == 2
    assert "exactly one of --max-shortfall-share and --shortfall-price" in capsys.readouterr().err
