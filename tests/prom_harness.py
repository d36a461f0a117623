"""A real-Prometheus test harness: write history, backfill it, serve it.

Tests write history as OpenMetrics text (`write_openmetrics`), turn it into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics` (`backfill`), and start the real Prometheus
server on a free loopback port over those blocks (`PrometheusServer`). Nothing is mocked.

Prometheus is the Debian package (`apt-get install -y prometheus`, which brings `promtool`).
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

PROMETHEUS_BINARY = "/usr/bin/prometheus"
PROMTOOL_BINARY = "/usr/bin/promtool"
INSTALL_HINT = (
    "the real Prometheus server is required by these tests: "
    "run `apt-get update && apt-get install -y --no-install-recommends prometheus` "
    "(it also installs promtool)"
)

Series = tuple[str, Mapping[str, str], npt.ArrayLike, npt.ArrayLike]
"""One series: metric name, labels, timestamps (float seconds), values."""

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class HarnessError(RuntimeError):
    """promtool or prometheus failed; the message carries their output."""


def require_binaries() -> None:
    """Fail (never skip) with an installation hint when Prometheus or promtool is missing."""
    missing = [b for b in (PROMETHEUS_BINARY, PROMTOOL_BINARY) if not os.access(b, os.X_OK)]
    if missing:
        raise HarnessError(f"missing {', '.join(missing)}: {INSTALL_HINT}")


def escape_label_value(value: str) -> str:
    """Escape a label value for the OpenMetrics text format (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_float(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _format_timestamp(seconds: float) -> str:
    # Millisecond precision is what the TSDB stores; avoid float noise like 1.7e9000000001.
    return f"{seconds:.3f}"


def write_openmetrics(path: str | os.PathLike[str], series: Sequence[Series]) -> int:
    """Write `series` as OpenMetrics text to `path` as gauges; return the number of samples.

    Samples are grouped per metric family (all series of one name together, each under one
    `# TYPE name gauge` line), each series' samples in increasing timestamp order, NaN samples
    skipped, and the file ends with `# EOF`. Timestamps are float seconds.
    """
    families: dict[str, list[tuple[Mapping[str, str], np.ndarray, np.ndarray]]] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for name, labels, timestamps, values in series:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labels:
            if not _LABEL_NAME.match(label) or label == "__name__":
                raise ValueError(f"invalid label name {label!r} on metric {name!r}")
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ValueError(f"duplicate series {name}{dict(labels)!r}")
        seen.add(key)
        ts = np.asarray(timestamps, dtype=float)
        vs = np.asarray(values, dtype=float)
        if ts.shape != vs.shape or ts.ndim != 1:
            raise ValueError(f"timestamps and values of {name} must be 1-d and of equal length")
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
        if np.any(np.diff(ts) == 0):
            raise ValueError(f"duplicate timestamps in series {name}{dict(labels)!r}")
        families.setdefault(name, []).append((labels, ts, vs))

    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for name, members in families.items():
            out.write(f"# TYPE {name} gauge\n")
            for labels, ts, vs in members:
                rendered = ",".join(
                    f'{k}="{escape_label_value(v)}"' for k, v in sorted(labels.items())
                )
                prefix = f"{name}{{{rendered}}}" if rendered else name
                for t, v in zip(ts.tolist(), vs.tolist(), strict=True):
                    if math.isnan(v):
                        continue
                    out.write(f"{prefix} {_format_float(v)} {_format_timestamp(t)}\n")
                    count += 1
        out.write("# EOF\n")
    return count


def backfill(
    openmetrics_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    timeout_seconds: float = 120.0,
) -> None:
    """Turn an OpenMetrics file into TSDB blocks under `data_dir` with promtool.

    promtool 2.42 has no `--max-block-duration` for this command: it cuts 2-hour blocks,
    re-reading the input once per block, so keep test histories to days, not months.
    """
    require_binaries()
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    command = [
        PROMTOOL_BINARY,
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        "--quiet",
        os.fspath(openmetrics_path),
        os.fspath(data_dir),
    ]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_seconds, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"promtool backfill timed out after {timeout_seconds}s") from exc
    if proc.returncode != 0:
        raise HarnessError(
            f"promtool backfill failed (exit {proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy by nature; the server start retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_MINIMAL_CONFIG = """\
# No scrape targets: the tests' data comes from backfilled blocks only.
global:
  scrape_interval: 1m
  evaluation_interval: 1m
scrape_configs: []
"""


class PrometheusServer:
    """The real Prometheus server on a free loopback port, over `data_dir`.

    Use as a context manager (or call `start()` / `stop()`); `.url` is the base URL. The
    retention is 100 years so backfilled history of any age is kept, and the config has no
    scrape targets, so the TSDB holds exactly what was backfilled.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        ready_timeout_seconds: float = 30.0,
        stop_timeout_seconds: float = 10.0,
        extra_args: Sequence[str] = (),
        config: str = _MINIMAL_CONFIG,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        """The server's configuration file (default: no scrape targets)."""
        self.ready_timeout_seconds = ready_timeout_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self.data_dir.parent / f"{self.data_dir.name}.prometheus.log"
        self._config_path = self.data_dir.parent / f"{self.data_dir.name}.prometheus.yml"

    @property
    def pid(self) -> int:
        """The server's process id (0 before it started), for benchmarks that read its CPU."""
        return self._process.pid if self._process is not None else 0

    @property
    def url(self) -> str:
        if self.port is None:
            raise HarnessError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """The server's own log so far (stderr and stdout)."""
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> PrometheusServer:
        require_binaries()
        if self._process is not None:
            raise HarnessError("Prometheus is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._config_path.write_text(self.config, encoding="utf-8")
        last_error: HarnessError | None = None
        for _attempt in range(3):  # a free port can be taken between probe and bind
            try:
                self._start_once()
                return self
            except HarnessError as exc:
                last_error = exc
                if "address already in use" not in str(exc):
                    raise
        assert last_error is not None
        raise last_error

    def _start_once(self) -> None:
        self.port = free_port()
        command = [
            PROMETHEUS_BINARY,
            f"--config.file={self._config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=100y",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
            *self.extra_args,
        ]
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + self.ready_timeout_seconds
        ready_url = f"{self.url}/-/ready"
        while True:
            code = self._process.poll()
            if code is not None:
                self._process.wait()
                self._process = None
                raise HarnessError(
                    f"prometheus exited with code {code} before it was ready:\n{self.log()}"
                )
            if _http_status(ready_url) == 200:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(
                    f"prometheus not ready within {self.ready_timeout_seconds}s:\n{self.log()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after `stop_timeout_seconds`)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        else:
            process.wait()

    def __enter__(self) -> PrometheusServer:
        return self if self._process is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | None:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=1.0) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        code: int = exc.code
        exc.close()
        return code
    except OSError:
        return None


def serve_history(series: Sequence[Series], workdir: str | os.PathLike[str]) -> PrometheusServer:
    """Write `series`, backfill them under `workdir` and return a started server over them."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    openmetrics = workdir / "history.om.txt"
    data_dir = workdir / "data"
    write_openmetrics(openmetrics, series)
    backfill(openmetrics, data_dir)
    return PrometheusServer(data_dir).start()
