"""The `run` and `recommend` subcommands: arguments, and one-line failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from predictive_scaler.cli import build_parser, main
from tests.kube_double import write_kubeconfig
from tests.prom_harness import free_port
from tests.test_reconcile import CONFIG


def test_run_arguments() -> None:
    args = build_parser().parse_args(
        ["run", "--config-map", "ops/scaler", "--dry-run", "--metrics-port", "9000",
         "--restore-on-exit", "--identity", "pod-a", "--log-format", "json"]
    )  # fmt: skip
    assert (args.config_map, args.config_file, args.dry_run) == ("ops/scaler", None, True)
    assert (args.metrics_port, args.restore_on_exit, args.identity) == (9000, True, "pod-a")
    assert args.log_format == "json"


@pytest.mark.parametrize("argv", [["run"], ["recommend", "--config", "a", "--config-map", "b/c"]])
def test_exactly_one_config_source(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_recommend_unreachable_prints_one_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    closed = f"http://127.0.0.1:{free_port()}"
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", closed, "token")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    for extra in (["--config", str(config)], ["--config-map", "ops/scaler"]):
        code = main(
            ["recommend", *extra, "--kubeconfig", str(kubeconfig), "--prometheus-url", closed]
        )
        captured = capsys.readouterr()
        assert code == 1
        assert captured.out == ""
        assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
        assert "Traceback" not in captured.err
