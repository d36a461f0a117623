"""The backtest and validate-config commands, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from predictive_scaler.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"


def test_backtest_on_the_bundled_trace_writes_json_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["backtest", "--json", str(out), "--plot", str(png), "--quiet"]) == 0
    report = json.loads(out.read_text())
    models = report["forecast"]["models"]
    assert report["forecast"]["horizon_seconds"] == 600
    assert {"persistence", "seasonal_naive", "auto"} <= set(models)
    for figures in models.values():
        assert set(figures) >= {"mase", "pinball_p90", "coverage_p90", "fit_seconds"}
        # Window-peak figures next to the per-step ones: what the decision uses.
        assert 0.8 <= figures["peak_coverage_p90"] <= 1.0
        assert {"peak_mase", "peak_pinball_p90"} <= set(figures)
    assert set(report["scaling"]) == {"reactive", "predictive", "oracle"}
    for figures in report["scaling"].values():
        assert set(figures) == {
            "underprovisioned_minutes",
            "unserved_fraction",
            "gpu_hours",
            "scale_events",
        }
    baselines = {"hpa_target", "static_floor", "hour_of_week", "phpa"}
    assert set(report["frontier"]) == {"predictive", "oracle", *baselines}
    for points in report["frontier"].values():
        assert all(len(p) == 2 and p[0] > 0 and p[1] >= 0 for p in points)
    predictive = report["scaling"]["predictive"]
    assert report["frontier"]["predictive"][0] == [
        predictive["gpu_hours"],
        predictive["underprovisioned_minutes"],
    ]
    assert set(report["iso_cost"]) == baselines
    for name, iso in report["iso_cost"].items():
        assert iso["shortfall_minutes"] >= 0, name
        assert iso["ratio"] == pytest.approx(
            predictive["underprovisioned_minutes"] / iso["shortfall_minutes"]
        )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "each alternative swept over its knob is short" in printed
    assert "forecast accuracy at 10 min ahead" in printed
    assert "peak coverage" in printed
    assert "scaling over the evaluation window" in printed


def test_backtest_of_a_short_trace_falls_back_and_still_reports(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code = main(
        [
            "backtest",
            "--trace",
            str(SHARED / "mooncake_conversation_3s.csv"),
            "--json",
            str(out),
            "--quiet",
            "--warmup",
            "2m",
            "--horizon",
            "2m",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["forecast"]["horizon_seconds"] == 120


def test_backtest_rejects_a_bad_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,value\n")
    assert main(["backtest", "--trace", str(bad), "--quiet"]) == 2
    assert "header must have 'timestamp'" in capsys.readouterr().err


def test_validate_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("targets:\n  - hpa: {namespace: llm, name: nim}\n")
    assert main(["validate-config", str(good)]) == 0
    assert "valid (1 targets, 1 enabled)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  scaleDownStep: -1\n")
    assert main(["validate-config", str(bad)]) == 1
    assert "defaults.scaleDownStep: got -1" in capsys.readouterr().err
