"""Packaging: the lean install (plotting is an extra), the lock file, one version, the licence.

The image is built from ``pip install -c constraints.txt .`` (no extras), so what these tests
pin is what ships: no matplotlib in the runtime dependencies, a clear message from
``backtest --plot`` when matplotlib is missing, every dependency pinned exactly in
``constraints.txt``, and the version written once.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import predictive_scaler
from predictive_scaler.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
SHORT_TRACE = REPO_ROOT.parent / "shared" / "data" / "traces" / "mooncake_conversation_3s.csv"


def _pyproject() -> dict[str, object]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _project() -> dict[str, object]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    return project


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+!-]+)", line)
        assert match, f"constraints.txt: not an exact pin: {raw!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


class TestPlotIsAnExtra:
    def test_matplotlib_is_not_a_runtime_dependency(self) -> None:
        project = _project()
        runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}  # type: ignore[attr-defined]
        assert "matplotlib" not in runtime
        extras = project["optional-dependencies"]
        assert isinstance(extras, dict)
        assert {canonicalize_name(Requirement(r).name) for r in extras["plot"]} == {"matplotlib"}

    def test_backtest_plot_without_matplotlib_says_how_to_get_it(
        self,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """With matplotlib not importable (``None`` in ``sys.modules`` makes ``import`` fail as
        in an install without the extra), ``--plot`` stops before the backtest runs, with the
        command that installs it."""
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        png = tmp_path / "r.png"
        argv = ["backtest", "--trace", str(SHORT_TRACE), "--plot", str(png), "--quiet"]
        assert main([*argv, "--warmup", "2m", "--horizon", "2m"]) == 2
        captured = capsys.readouterr()
        assert "pip install 'predictive-scaler[plot]'" in captured.err
        assert "forecast accuracy" not in captured.out  # nothing ran first
        assert not png.exists()


class TestLockFile:
    def test_every_requirement_is_pinned_and_satisfies_its_range(self) -> None:
        project = _project()
        extras = project["optional-dependencies"]
        assert isinstance(extras, dict)
        requirements = [
            Requirement(r)
            for r in [*project["dependencies"], *extras["test"], *extras["plot"]]  # type: ignore[misc]
        ]
        pins = _pins()
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                requirement,
                pins[name],
            )
        assert "predictive-scaler" not in pins

    def test_the_image_and_ci_install_from_it(self) -> None:
        dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
        assert re.search(r"pip install [^\n]*-c constraints\.txt", dockerfile)
        assert re.search(r"^COPY [^\n]*constraints\.txt", dockerfile, re.MULTILINE)
        ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
        installs = [line for line in ci.splitlines() if re.search(r"pip install", line)]
        assert installs
        assert all("-c constraints.txt" in line for line in installs), installs
        ignore = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        assert "!constraints.txt" in ignore

    def test_no_buildkit_frontend_is_pulled(self) -> None:
        """``# syntax=`` makes BuildKit pull a frontend image from a registry (fails offline)."""
        for line in (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
            assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), line


class TestVersionAndLicence:
    def test_version_is_written_once(self) -> None:
        project = _project()
        assert "version" not in project
        assert project["dynamic"] == ["version"]
        tool = _pyproject()["tool"]
        assert isinstance(tool, dict)
        dynamic = tool["setuptools"]["dynamic"]
        assert dynamic["version"] == {"attr": "predictive_scaler.__version__"}
        assert re.fullmatch(r"\d+\.\d+\.\d+", predictive_scaler.__version__)

    def test_shipped_image_tag_and_changelog_follow_the_version(self) -> None:
        version = predictive_scaler.__version__
        deployment = yaml.safe_load(
            (REPO_ROOT / "deploy" / "base" / "deployment.yaml").read_text(encoding="utf-8")
        )
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.rpartition(":")[2] == version
        changelog = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
        releases = re.findall(r"^## \[?(\d+\.\d+\.\d+)\]?", changelog, re.MULTILINE)
        assert releases and releases[0] == version

    def test_licence_is_the_apache_2_text(self) -> None:
        text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
        assert "Apache License" in text and "Version 2.0, January 2004" in text
        assert "END OF TERMS AND CONDITIONS" in text
        assert _project()["license"] == "Apache-2.0"
        assert 'org.opencontainers.image.licenses="Apache-2.0"' in (
            REPO_ROOT / "Dockerfile"
        ).read_text(encoding="utf-8")
