from collections.abc import Iterator

import pytest

from predictive_scaler.logs import reset_logging

pytest_plugins = ["tests.kube_double.fixtures", "tests.prom_fixtures"]


@pytest.fixture(autouse=True)
def _logging_reset() -> Iterator[None]:
    """A test that configures logging onto its captured output (recommend, run) would leave
    every later test logging into a closed stream: each test starts unconfigured."""
    yield
    reset_logging()
