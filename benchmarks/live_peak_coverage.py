"""Live window-peak coverage (issue 15) on every shared trace of at least 7 days: the real
controller against a real Prometheus backfilled with the trace, one cycle per step over
everything after the first 7 days, at the defaults (warm-up 10m, interval 30s, p90, auto,
7 days of history, refit every 6 h; ``tests/live_peak.py``). Prints Markdown: per trace the
live window-peak coverage (each window's bound against the trace's realised peak over it),
the per-step coverage at the horizon, and the controller's own published figure at the end
(its last 288 windows) against the same scoring.

    nice python benchmarks/live_peak_coverage.py [--only a.csv,b.csv] [--jobs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictive_scaler.config import parse_duration
from predictive_scaler.logs import configure_logging
from predictive_scaler.traces import load_trace
from tests.kube_double.fixtures import make_api_client
from tests.kube_double.server import KubeDouble
from tests.live_peak import LiveRun, demand_series, live_trace, run_live
from tests.prom_harness import require_binaries, serve_history

DEFAULT_TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
MIN_DAYS = 7.0


async def _run(path: Path, cycle_seconds: float | None) -> LiveRun:
    trace = live_trace(path)
    with tempfile.TemporaryDirectory(prefix="live-peak-") as workdir:
        prometheus = serve_history(demand_series(trace), workdir)
        kube = KubeDouble()
        await kube.start()
        api = make_api_client(kube.url, kube.token)
        try:
            return await run_live(trace, prometheus, kube, api, cycle_seconds=cycle_seconds)
        finally:
            await api.close()
            await kube.close()
            prometheus.stop()


def run_one(path: Path, cycle_seconds: float | None = None) -> LiveRun:
    # Two lines a cycle are noise here: errors only.
    configure_logging("json", level=logging.ERROR, force=True)
    return asyncio.run(_run(path, cycle_seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--only", help="comma-separated file names")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--cycle",
        help="time between cycles (default: one per trace step; the interval stays 30s, so "
        "e.g. --cycle 30s runs at the production cadence)",
    )
    args = parser.parse_args()
    require_binaries()
    paths = sorted(p for p in args.traces.glob("*.csv*") if not p.name.endswith("_tokens.csv"))
    if args.only:
        paths = [p for p in paths if p.name in set(args.only.split(","))]
    paths = [p for p in paths if load_trace(p).span_seconds >= MIN_DAYS * 86_400]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        cycle = parse_duration(args.cycle) if args.cycle else None
        runs = list(pool.map(run_one, paths, [cycle] * len(paths)))
    print(
        "| trace | step | cycle every | window (steps) | cycles | windows scored "
        "| live window-peak coverage | live per-step coverage | published at the end "
        "| same scoring | in 0.87-0.93 | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        end = run.gauge[-1] if run.gauge else float("nan")
        inside = "yes" if 0.87 <= run.peak_coverage <= 0.93 else "**no**"
        print(
            f"| {run.trace} | {run.step:g}s | {run.cycle_seconds:g}s | {run.window_steps} "
            f"| {run.cycles} "
            f"| {len(run.covered)} | {run.peak_coverage:.3f} | {run.step_coverage:.3f} "
            f"| {end:.3f} | {run.controller_view:.3f} | {inside} | {run.seconds:.0f} |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s wall", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
