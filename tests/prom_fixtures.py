"""pytest fixtures for tests that need the real Prometheus server (see tests/prom_harness.py).

Registered through `pytest_plugins` in tests/conftest.py. Nothing is skipped: a missing
Prometheus installation fails the test with the command that installs it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.prom_harness import (
    HarnessError,
    PrometheusServer,
    Series,
    require_binaries,
    serve_history,
)

PrometheusFactory = Callable[[Sequence[Series]], PrometheusServer]
"""Given series, backfill them into a fresh TSDB and return a started server over it."""


@pytest.fixture(scope="session")
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusFactory]:
    """Start real Prometheus servers over backfilled history; all are stopped at session end.

    Each call gets its own temporary directory and port, so module-scoped fixtures can call
    it once and share the server across a module's tests.
    """
    try:
        require_binaries()
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    servers: list[PrometheusServer] = []
    counter = itertools.count()

    def factory(series: Sequence[Series]) -> PrometheusServer:
        workdir = tmp_path_factory.mktemp(f"prometheus-{next(counter)}")
        server = serve_history(series, workdir)
        servers.append(server)
        return server

    try:
        yield factory
    finally:
        for server in servers:
            server.stop()
