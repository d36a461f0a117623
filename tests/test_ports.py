"""The named ports (predictive_scaler/ports.py): the fit runners the controller is given
declare how many fits they run at once, and the module reaches no client library."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from predictive_scaler import ports
from predictive_scaler.fit_runner import ProcessFitRunner, ThreadFitRunner, make_fit_runner
from predictive_scaler.ports import FitRunner

_T = TypeVar("_T")


async def _bare(fit: Callable[[], _T]) -> _T:
    return fit()


def test_both_fit_runners_declare_their_workers() -> None:
    thread = ThreadFitRunner(1.0)
    assert isinstance(thread, FitRunner)
    assert thread.workers == 1
    pool = ProcessFitRunner(3)  # spawns nothing until a fit is submitted
    try:
        assert isinstance(pool, FitRunner)
        assert pool.workers == 3
    finally:
        pool.close()
    assert isinstance(make_fit_runner(0, 1.0), FitRunner)


def test_a_bare_fit_call_is_no_fit_runner() -> None:
    # The controller counts it as one worker; it has nothing to declare.
    assert not isinstance(_bare, FitRunner)


def test_ports_import_only_the_standard_library_and_the_values_floor() -> None:
    tree = ast.parse(Path(ports.__file__).read_text())
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert names == {
        "__future__",
        "collections.abc",
        "datetime",
        "typing",
        "predictive_scaler.ranges",
        "predictive_scaler.values",
    }
