"""Scale benchmark (issue 6): N targets against a real Prometheus and the API double.

    python benchmarks/scale.py --targets 10,100,1000 [--history-days 14] [--cycles 5]
        [--fit-workers 2] [--modes optimised,baseline] [--profile DIR] [--json FILE]

For each N: every target gets its own demand series, ``gpu_cache_usage_perc{namespace="ns-<i>",
pod="nim-0"}``, cut from the shared 1-minute traces (5-minute ones linearly resampled) at a
per-target offset and rescaled so its 99th percentile needs 2..12 pods at the HPA's 0.7
target; ``--history-days`` of it is backfilled into a real Prometheus with promtool (one
OpenMetrics file per 2-hour block, several promtool runs in parallel; cached under
``--workdir``). N HPAs live in the Kubernetes API double, served from this (driver) process
like a real API server would be from its own.

Each mode runs the real :class:`~predictive_scaler.controller.Controller` in a worker process
(so its CPU time and peak RSS are its own) with a time-travelling clock: a cold first cycle
(every target fetches its history and fits; with the progressive start of ``optimised``, its
newest two days and a stand-in, the rest read beside the cycles), then ``--cycles`` steady
cycles,
the clock moving one step (1 minute, so every steady cycle brings one new point per target;
the controller's interval is 30 s and a cycle without a new point costs less).

- ``optimised``: the controller as shipped: batched PromQL, compact fits in a process pool,
  refits staggered over the refit interval (6 h), incremental fetch into sliding buffers.
- ``baseline``: the same controller refitting every target every cycle (refitInterval = the
  step), the refit-every-cycle design the issue compares against.
- ``unbatched``: ``optimised`` with one range query per target and query (batching off).
- ``gets``: ``optimised`` reading each HPA by GET every cycle (``controller.hpaWatch: off``),
  the read path before the informer.
- ``failover``: a leader and a hot standby on one Lease (see :func:`run_failover`): when the
  standby takes the Lease after the leader dies and when its first patch lands. Printed on
  its own, not in the table.

Figures per mode: cold cycle wall time, steady p50/p95 wall time, CPU seconds per steady
cycle (the controller process plus its fit workers, from /proc), peak RSS (controller plus
workers, each process's high-water mark summed: an upper bound), Prometheus range requests
and response bytes per steady cycle (Prometheus' own ``prometheus_http_requests_total`` and
``prometheus_http_response_size_bytes_sum`` for ``/api/v1/query_range``), HPA reads per steady
cycle (GETs of an HPA the API double answered within the cycle, by its own request record;
the informer's list + watch are counted apart), targets the cold cycle left undecided, and
when the last ``auto`` fit running beside the cycles had landed (from the cold cycle's
start; until then a cheap stand-in decides), and the event loop's worst lateness (what
``/healthz``'s heartbeat would see). The forecasts and
decisions of ``optimised`` are compared with the baseline's, target by target and cycle by
cycle. Prints a Markdown table, then each cycle's wall time, writes and where its CPU went
(the controller process, its fit workers, the driver process serving the API double,
Prometheus).
"""

# ruff: noqa: ASYNC240 - the driver is a one-shot script; its few file operations may block

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import math
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from predictive_scaler.traces import load_trace  # noqa: E402
from tests.prom_harness import PROMTOOL_BINARY, PrometheusServer, require_binaries  # noqa: E402

TRACES = ROOT.parent / "shared" / "data" / "traces"
TRACE_FILES = (
    "twitter_stream_2021-08_1min.csv",
    "nasa_http_1995-08_1min.csv.gz",
    "nab_twitter_volume_aapl_5min.csv",
    "nab_aws_elb_request_count_5min.csv",
)
STEP = 60.0
BLOCK = 7200.0
TARGET_PER_POD = 0.7
INTERVAL = 30.0
MODES = ("optimised", "baseline", "unbatched", "gets", "failover")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

FloatArray = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------- data


def _traces() -> list[FloatArray]:
    out = []
    for name in TRACE_FILES:
        trace = load_trace(TRACES / name)
        values = trace.values
        if np.isnan(values).any():  # fill the rare gaps linearly
            idx = np.arange(values.size)
            ok = np.isfinite(values)
            values = np.interp(idx, idx[ok], values[ok])
        if trace.step_seconds != STEP:
            ratio = trace.step_seconds / STEP
            fine = np.arange(0, values.size - 1 + 1e-9, 1 / ratio)
            values = np.interp(fine, np.arange(values.size), values)
        out.append(np.asarray(values, dtype=np.float64))
    return out


def demand_matrix(n: int, points: int, seed: int = 6) -> FloatArray:
    """(n, points) demand in pods' worth of KV cache: trace i % 4, shifted and rescaled."""
    rng = np.random.default_rng(seed)
    traces = _traces()
    out = np.empty((n, points))
    for i in range(n):
        trace = traces[i % len(traces)]
        offset = int(rng.integers(0, trace.size))
        segment = np.take(trace, np.arange(offset, offset + points), mode="wrap")
        peak_pods = int(rng.integers(2, 13))
        scale = peak_pods * TARGET_PER_POD / max(float(np.percentile(segment, 99)), 1e-9)
        out[i] = np.round(segment * scale, 3)
    return out


def _write_chunk(path: Path, n: int, ts: FloatArray, values: FloatArray) -> None:
    stamps = [f"{int(t)}" for t in ts]
    with open(path, "w", encoding="utf-8") as out:
        out.write("# TYPE gpu_cache_usage_perc gauge\n")
        for i in range(n):
            prefix = f'gpu_cache_usage_perc{{namespace="ns-{i}",pod="nim-0"}} '
            row = values[i].tolist()
            out.write("".join(f"{prefix}{v!r} {s}\n" for v, s in zip(row, stamps, strict=True)))
        out.write("# EOF\n")


def _promtool(chunk: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            PROMTOOL_BINARY,
            *("tsdb", "create-blocks-from", "openmetrics", "--quiet"),
            *(str(chunk), str(out_dir)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"promtool failed on {chunk}: {proc.stderr.strip()}")
    chunk.unlink()


def prepare_tsdb(workdir: Path, n: int, days: float, jobs: int) -> tuple[Path, float, float]:
    """Backfill (or reuse) a TSDB for ``n`` targets; returns (data dir, end, seconds taken)."""
    base = workdir / f"targets-{n}-days-{days:g}"
    meta_path = base / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return base / "data", float(meta["end"]), 0.0
    started = time.perf_counter()
    shutil.rmtree(base, ignore_errors=True)
    (base / "chunks").mkdir(parents=True)
    end = math.floor(time.time() / BLOCK) * BLOCK - BLOCK  # block-aligned, in the past
    start = end - math.ceil(days * 86_400 / BLOCK) * BLOCK
    ts = np.arange(start, end, STEP)
    demand = demand_matrix(n, ts.size)
    data = base / "data"
    data.mkdir()
    futures = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for b, block_start in enumerate(np.arange(start, end, BLOCK)):
            sel = (ts >= block_start) & (ts < block_start + BLOCK)
            chunk = base / "chunks" / f"{b:04d}.om"
            _write_chunk(chunk, n, ts[sel], demand[:, sel])
            futures.append(pool.submit(_promtool, chunk, base / "chunks" / f"out-{b:04d}"))
        for future in futures:
            future.result()
    for out_dir in sorted((base / "chunks").glob("out-*")):
        for block in out_dir.iterdir():
            block.rename(data / block.name)
    shutil.rmtree(base / "chunks")
    meta_path.write_text(json.dumps({"end": end, "targets": n, "days": days}))
    return data, end, time.perf_counter() - started


# ---------------------------------------------------------------------------- worker


def config_text(n: int, refit: str, hpa_watch: str = "cluster") -> str:
    lines = [
        "controller:",
        f"  hpaWatch: {hpa_watch}",
        "defaults:",
        "  interval: 30s",
        "  step: 1m",
        "  history: 7d",
        "  warmup: 10m",
        "  model: auto",
        f"  refitInterval: {refit}",
        "targets:",
    ]
    lines += [f"  - hpa: {{namespace: ns-{i}, name: nim-llm}}" for i in range(n)]
    return "\n".join(lines) + "\n"


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _proc_hwm_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def _prom_counters(url: str) -> tuple[float, float]:
    with _NO_PROXY.open(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    requests = sum(
        float(m.group(1))
        for m in re.finditer(
            r'^prometheus_http_requests_total\{[^}]*handler="/api/v1/query_range"[^}]*\} (\S+)',
            text,
            re.M,
        )
    )
    size = re.search(
        r'^prometheus_http_response_size_bytes_sum\{handler="/api/v1/query_range"\} (\S+)',
        text,
        re.M,
    )
    return requests, float(size.group(1)) if size else 0.0


async def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    from predictive_scaler.config import parse_config
    from predictive_scaler.informer import HpaInformer
    from predictive_scaler.kube import KubeClient
    from predictive_scaler.logs import configure_logging
    from predictive_scaler.runtime import Controller, ProcessFitRunner
    from tests.kube_double import make_api_client

    configure_logging("json", level=logging.ERROR)  # a thousand targets log a lot

    mode = args.mode
    api = make_api_client(args.kube_url, args.kube_token)
    kube = KubeClient(api)
    clock = FakeClock(datetime.fromtimestamp(args.start, UTC))
    runner = ProcessFitRunner(args.fit_workers) if args.fit_workers > 0 else None
    controller = Controller(
        kube,
        prometheus_url=args.prom_url,
        clock=clock,
        fit_runner=runner,
        max_concurrency=args.concurrency,
        batch_queries=mode != "unbatched",
        hpa_informer=HpaInformer(kube),  # as run_controller does; hpaWatch decides its scope
        # As `run` ships: a cheap stand-in first, `auto` beside the cycles. The baseline
        # refits every target every cycle, within the cycle, as the old design did.
        progressive_start=mode != "baseline",
    )
    controller.apply_config(
        parse_config(
            config_text(
                args.targets,
                "1m" if mode == "baseline" else "6h",
                "off" if mode == "gets" else "cluster",
            )
        )
    )
    pool_pids: list[int] = []

    def cpu_now() -> float:
        if runner is not None:
            pool_pids[:] = list(getattr(runner._pool, "_processes", {}) or {})
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (
            time.process_time()
            + sum(_proc_cpu(pid) for pid in pool_pids)
            + kids.ru_utime
            + kids.ru_stime
        )

    def cpu_split() -> dict[str, float]:
        # Where the CPU of a cycle went on the shared cores: this controller process, its
        # fit workers, the driver serving the API double, and Prometheus.
        return {
            "controller": time.process_time(),
            "event_loop": time.thread_time(),
            "workers": sum(_proc_cpu(pid) for pid in pool_pids),
            "api_double": _proc_cpu(os.getppid()),
            "prometheus": _proc_cpu(args.prom_pid) if args.prom_pid else 0.0,
        }

    cycles: list[dict[str, Any]] = []
    # The event-loop thread's own CPU time: a wall profile charges a send the time the
    # process serving the other end ran instead of us, and process time charges whatever
    # the loop runs with the read threads' CPU.
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    first_started = time.perf_counter()
    configured_landed = math.nan
    lags: list[float] = []

    async def watch_lag() -> None:
        # How late the event loop wakes a 50 ms sleep: /healthz's heartbeat ticks on the
        # loop, and the shipped probe kills after 120 s without a tick plus 6 failures.
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.05)
            lags.append(time.monotonic() - before - 0.05)

    lag_watch = asyncio.create_task(watch_lag())
    try:
        for index in range(1 + args.cycles):
            if mode == "baseline":  # force a refit of every target in every cycle
                for rec in controller.reconcilers.values():
                    for state in rec._signals.values():
                        state.forecaster.points_since_fit = 1 << 30
            requests0, bytes0 = _prom_counters(args.prom_url)
            cpu0 = cpu_now()
            split0 = cpu_split()
            refits0 = _fit_count(controller)
            profiled = profiler is not None and (index > 0) != args.profile_cold
            if profiler is not None and profiled:
                profiler.enable()
            started = time.perf_counter()
            began = time.monotonic()
            lags.clear()
            reports = await controller.run_due()
            wall = time.perf_counter() - started
            ended = time.monotonic()
            if profiler is not None and profiled:
                profiler.disable()
            cpu = cpu_now() - cpu0
            split = {k: v - split0[k] for k, v in cpu_split().items()}
            requests1, bytes1 = _prom_counters(args.prom_url)
            cycles.append(
                {
                    "wall": wall,
                    "cpu": cpu,
                    "cpu_split": split,
                    "requests": requests1 - requests0,
                    "bytes": bytes1 - bytes0,
                    "refits": _fit_count(controller) - refits0,
                    "window": [began, ended],
                    "max_loop_lag": max(lags, default=0.0),
                    "problems": sum(1 for r in reports for s in r.signals if s.problem),
                    "problem_kinds": _problem_kinds(reports),
                    "errors": sum(1 for r in reports if r.error),
                    "undecided": sum(
                        1 for r in reports if r.error or any(s.problem for s in r.signals)
                    ),
                    "configured": sum(
                        1 for r in reports if str(r.signals[0].model or "").startswith("auto")
                    ),
                    "decisions": {
                        r.target: [
                            r.recommended,
                            r.signals[0].upper_max,
                            r.signals[0].mean,
                            r.signals[0].model,
                        ]
                        for r in reports
                    },
                }
            )
            clock.now += timedelta(seconds=args.advance)
        # The older history and the configured models' fits run beside the cycles, and each
        # is taken up at its target's next cycle: cycles go on (unmeasured) until every
        # target decides on its configured model.
        for _ in range(20):
            await controller.wait_for_fits()
            last = await controller.run_due()
            clock.now += timedelta(seconds=args.advance)
            if all(str(r.signals[0].model or "").startswith("auto") for r in last):
                break
        configured_landed = time.perf_counter() - first_started
    finally:
        lag_watch.cancel()
        hwm = _proc_hwm_kib(os.getpid())
        workers_hwm = sum(_proc_hwm_kib(pid) for pid in pool_pids)
        await controller.aclose()
        await api.close()
        if runner is not None:
            runner.close()
    if profiler is not None:
        profiler.dump_stats(args.profile)
    return {
        "mode": mode,
        "cycles": cycles,
        "configured_landed_s": configured_landed,
        "rss_mib": hwm / 1024,
        "workers_rss_mib": workers_hwm / 1024,
        "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def run_failover(args: argparse.Namespace) -> dict[str, Any]:
    """A leader failover at N targets: a leader and a hot standby (two controllers in this
    process, on one fake clock, sharing the fit workers) run the cold and steady cycles until
    both decide on ``auto``; the clock moves one step (new demand) and the leader dies right
    after renewing its Lease, before its cycle (no release: a crash). The standby's cycle
    then decides and holds its writes back; time goes on in 1 s steps, the standby renewing
    every renew period and its loop waking every ``MAX_LOOP_SLEEP_SECONDS`` (the longest the
    shipped loop sleeps), until its first interval as leader is over. When it wins and how
    long its first leader cycle takes, and which writes it makes, are the figures."""
    from predictive_scaler.config import parse_config
    from predictive_scaler.dispatch import MAX_LOOP_SLEEP_SECONDS
    from predictive_scaler.informer import HpaInformer
    from predictive_scaler.kube import KubeClient
    from predictive_scaler.leader import LeaderElector
    from predictive_scaler.logs import configure_logging
    from predictive_scaler.runtime import Controller, ProcessFitRunner
    from tests.kube_double import make_api_client

    configure_logging("json", level=logging.ERROR)
    api = make_api_client(args.kube_url, args.kube_token)
    clock = FakeClock(datetime.fromtimestamp(args.start, UTC))
    runner = ProcessFitRunner(args.fit_workers) if args.fit_workers > 0 else None
    config = parse_config(config_text(args.targets, "6h"))
    settings = config.controller

    def controller(identity: str) -> Controller:
        kube = KubeClient(api, reporting_instance=identity)
        made = Controller(
            kube,
            prometheus_url=args.prom_url,
            clock=clock,
            fit_runner=runner,
            max_concurrency=args.concurrency,
            hpa_informer=HpaInformer(kube),
            progressive_start=True,
            elector=LeaderElector(
                kube,
                "predictive-scaler",
                "predictive-scaler",
                identity,
                lease_duration_seconds=math.ceil(settings.lease_duration_seconds),
                renew_period_seconds=settings.renew_period_seconds,
                clock=clock,
            ),
        )
        made.apply_config(config)
        return made

    leader, standby = controller("leader"), controller("standby")
    walls: list[float] = []
    result: dict[str, Any] = {"mode": "failover"}
    try:
        on_auto = False
        for index in range(1 + args.cycles + 40):
            if index > args.cycles:  # until both decide on their configured models
                if on_auto:
                    break
                await leader.wait_for_fits()
                await standby.wait_for_fits()
            assert await leader.renew_leadership(), "the leader lost its Lease"
            assert not await standby.renew_leadership(), "the standby took a live Lease"
            started = time.perf_counter()
            led = await leader.run_due()
            followed = await standby.run_due()
            walls.append(time.perf_counter() - started)
            on_auto = all(
                str(r.signals[0].model or "").startswith("auto") for r in (*led, *followed)
            )
            clock.now += timedelta(seconds=args.advance)
        result["setup_cycles"] = len(walls)
        result["both_on_auto"] = on_auto
        # New demand; the leader renews, then dies before its cycle.
        assert await leader.renew_leadership()
        assert not await standby.renew_leadership()
        death = clock.now
        await leader.aclose()
        held = [r for r in await standby.run_due() if r.patch_result == "dry_run"]
        result["held_back"] = len(held)
        fits_before = _fit_count(standby)
        lease = math.ceil(settings.lease_duration_seconds)
        interval = max(r.policy.interval_seconds for r in standby.reconcilers.values())
        held_targets = {r.target for r in held}
        acquired: float | None = None
        leader_cycles: list[dict[str, Any]] = []
        elapsed = 0
        while acquired is None or elapsed < acquired + interval:
            elapsed += 1
            clock.now = death + timedelta(seconds=elapsed)
            renewing = elapsed % settings.renew_period_seconds == 0
            if renewing and await standby.renew_leadership() and acquired is None:
                acquired = float(elapsed)
            if elapsed % MAX_LOOP_SLEEP_SECONDS == 0 and acquired is not None:
                began = time.monotonic()
                reports = await standby.run_due()
                ended = time.monotonic()
                applied = {r.target for r in reports if r.patch_result == "applied"}
                leader_cycles.append(
                    {
                        "at": float(elapsed),
                        "wall": ended - began,
                        "window": [began, ended],
                        "applied": len(applied),
                        "ran": len(reports),
                        "held_back_applied": len(applied & held_targets),
                    }
                )
            if elapsed > 10 * lease:
                break
        result.update(
            {
                "lease_duration_s": lease,
                "renew_period_s": settings.renew_period_seconds,
                "interval_s": interval,
                "acquired_after_s": acquired,
                "leader_cycles": leader_cycles,
                "fits_in_leader_cycles": _fit_count(standby) - fits_before,
                "setup_wall_max_s": max(walls, default=0.0),
            }
        )
    finally:
        await leader.aclose()
        await standby.aclose()
        await api.close()
        if runner is not None:
            runner.close()
    return result


def _problem_kinds(reports: Any) -> dict[str, int]:
    """Problems by their first words (``stale: newest sample is 65s old`` -> ``stale``)."""
    kinds: dict[str, int] = {}
    for report in reports:
        texts = [s.problem for s in report.signals if s.problem]
        if report.error:
            texts.append(f"kube: {report.error}")
        for text in texts:
            kind = text.split(":")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _fit_count(controller: Any) -> int:
    """Fits adopted so far: a new fit result object on a signal counts one."""
    total = 0
    for rec in controller.reconcilers.values():
        for state in rec._signals.values():
            fit = state.forecaster.fit_
            if fit is not None and getattr(state, "_bench_seen", None) is not fit:
                state._bench_seen = fit
                state._bench_count = getattr(state, "_bench_count", 0) + 1
            total += getattr(state, "_bench_count", 0)
    return total


# ---------------------------------------------------------------------------- driver


@dataclass
class ModeFigures:
    mode: str
    cold_wall: float
    steady_p50: float
    steady_p95: float
    cold_cpu: float
    steady_cpu: float
    rss_mib: float
    controller_rss_mib: float
    workers_rss_mib: float
    requests: float
    bytes: float
    cold_requests: float
    hpa_gets: float
    cold_hpa_gets: float
    writes: float
    """HPA patches plus Events created per steady cycle."""
    hpa_lists: int
    hpa_watches: int
    refits: float
    problems: int
    cold_undecided: int
    """Targets the cold cycle left without a decision (a problem or an API error)."""
    configured_landed_s: float
    """Seconds from the cold cycle's start until every target's `auto` fit had landed."""
    max_loop_lag: float
    """The event loop's worst lateness in any cycle (seconds)."""


def summarise(result: dict[str, Any]) -> ModeFigures:
    cycles = result["cycles"]
    cold, steady = cycles[0], cycles[1:] or cycles[:1]
    walls = np.array([c["wall"] for c in steady])
    return ModeFigures(
        mode=result["mode"],
        cold_wall=cold["wall"],
        steady_p50=float(np.percentile(walls, 50)),
        steady_p95=float(np.percentile(walls, 95)),
        cold_cpu=cold["cpu"],
        steady_cpu=float(np.mean([c["cpu"] for c in steady])),
        rss_mib=result["rss_mib"] + result["workers_rss_mib"],
        controller_rss_mib=result["rss_mib"],
        workers_rss_mib=result["workers_rss_mib"],
        requests=float(np.mean([c["requests"] for c in steady])),
        bytes=float(np.mean([c["bytes"] for c in steady])),
        cold_requests=cold["requests"],
        hpa_gets=float(np.mean([c["hpa_gets"] for c in steady])),
        cold_hpa_gets=cold["hpa_gets"],
        writes=float(np.mean([c.get("writes", 0) for c in steady])),
        hpa_lists=result["hpa_lists"],
        hpa_watches=result["hpa_watches"],
        refits=float(np.mean([c["refits"] for c in steady])),
        problems=sum(c["problems"] + c["errors"] for c in cycles),
        cold_undecided=cold.get("undecided", 0),
        configured_landed_s=result.get("configured_landed_s", math.nan),
        max_loop_lag=max(c.get("max_loop_lag", 0.0) for c in cycles),
    )


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Forecast and decision differences of ``a`` against ``b``, cycle by cycle."""
    max_abs = max_rel = same_model_abs = same_model_rel = 0.0
    differing = total = same_model_differing = 0
    model_changes = 0
    max_step = 0
    for ca, cb in zip(a["cycles"], b["cycles"], strict=False):
        for target, (rec_a, up_a, _mean_a, model_a) in ca["decisions"].items():
            rec_b, up_b, _mean_b, model_b = cb["decisions"].get(target, [None] * 4)
            total += 1
            if rec_a != rec_b:
                differing += 1
                if rec_a is not None and rec_b is not None:
                    max_step = max(max_step, abs(rec_a - rec_b))
            if model_a != model_b:
                model_changes += 1
            elif rec_a != rec_b:
                same_model_differing += 1
            if up_a is not None and up_b is not None:
                diff = abs(up_a - up_b)
                max_abs = max(max_abs, diff)
                max_rel = max(max_rel, diff / max(abs(up_b), 1e-9))
                if model_a == model_b:
                    same_model_abs = max(same_model_abs, diff)
                    same_model_rel = max(same_model_rel, diff / max(abs(up_b), 1e-9))
    return {
        "max_abs_upper": max_abs,
        "max_abs_upper_pods": max_abs / TARGET_PER_POD,
        "max_rel_upper": max_rel,
        "decisions_differing": differing,
        "decisions_total": total,
        "max_decision_diff": max_step,
        "model_differing": model_changes,
        "same_model_max_abs_upper": same_model_abs,
        "same_model_max_rel_upper": same_model_rel,
        "same_model_decisions_differing": same_model_differing,
    }


async def run_mode(
    args: argparse.Namespace,
    n: int,
    mode: str,
    prom_url: str,
    start: float,
    out: Path,
    prom_pid: int = 0,
) -> dict[str, Any]:
    from tests.kube_double import KubeDouble, make_hpa

    kube = KubeDouble()
    await kube.start()
    try:
        for i in range(n):
            kube.put_object(make_hpa(f"ns-{i}", "nim-llm", 1, 20, "700m", current_replicas=1))
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--mode",
            mode,
            "--targets",
            str(n),
            "--cycles",
            str(args.baseline_cycles if mode == "baseline" else args.cycles),
            "--advance",
            str(args.advance),
            "--fit-workers",
            str(args.fit_workers),
            "--concurrency",
            str(args.concurrency),
            "--kube-url",
            kube.url,
            "--kube-token",
            kube.token,
            "--prom-url",
            prom_url,
            "--prom-pid",
            str(prom_pid),
            "--start",
            repr(start),
            "--out",
            str(out),
        ]
        if args.profile:
            command += ["--profile", str(Path(args.profile) / f"{mode}-{n}.prof")]
            if args.profile_cold:
                command.append("--profile-cold")
        proc = await asyncio.create_subprocess_exec(*command, cwd=str(ROOT))
        code = await proc.wait()
        if code != 0:
            raise RuntimeError(f"worker {mode} for {n} targets exited with {code}")
        result: dict[str, Any] = json.loads(out.read_text())
        _count_hpa_requests(result, kube.requests)
    finally:
        await kube.close()
    return result


def _count_hpa_requests(result: dict[str, Any], records: list[Any]) -> None:
    """HPA reads per cycle from the double's own record: the GETs of one HPA it answered
    within each cycle's window, and the informer's lists and watches over the whole run."""
    hpa = [
        r
        for r in records
        if r.attributes is not None
        and r.attributes.resource == "horizontalpodautoscalers"
        and not r.attributes.subresource
    ]
    gets = [r.at for r in hpa if r.attributes.verb == "get"]
    # Writes: HPA patches and the Events that go with a changed minReplicas.
    writes = [
        r.at
        for r in records
        if r.attributes is not None
        and r.allowed
        and (
            (r.attributes.resource == "horizontalpodautoscalers" and r.attributes.verb == "patch")
            or (r.attributes.resource == "events" and r.attributes.verb == "create")
        )
    ]
    patches = [
        r.at
        for r in records
        if r.attributes is not None
        and r.allowed
        and r.attributes.resource == "horizontalpodautoscalers"
        and r.attributes.verb == "patch"
    ]
    for cycle in result.get("leader_cycles", []):  # failover: when its first patch came
        began, ended = cycle.pop("window")
        inside = [at - began for at in patches if began <= at <= ended]
        cycle["first_patch_s"] = min(inside) if inside else None
        cycle["patches"] = len(inside)
    for cycle in result.get("cycles", []):
        began, ended = cycle.pop("window")
        cycle["hpa_gets"] = sum(1 for at in gets if began <= at <= ended)
        cycle["writes"] = sum(1 for at in writes if began <= at <= ended)
    result["hpa_lists"] = sum(1 for r in hpa if r.attributes.verb == "list")
    result["hpa_watches"] = sum(1 for r in hpa if r.attributes.verb == "watch")


def _print_failover(n: int, result: dict[str, Any]) -> None:
    lease, interval = result["lease_duration_s"], result["interval_s"]
    acquired = result["acquired_after_s"]
    first = next((c for c in result["leader_cycles"] if c.get("first_patch_s") is not None), None)
    print(
        f"# {n} targets, failover (load {result['load']}): {result['setup_cycles']} cycles of "
        f"both controllers before (both on auto: {result['both_on_auto']}, slowest "
        f"{result['setup_wall_max_s']:.2f} s for both); the standby held back "
        f"{result['held_back']} writes at the leader's death; it took the Lease "
        f"{acquired} s after the leader's last renewal (lease {lease} s, renew period "
        f"{result['renew_period_s']:g} s)"
    )
    for c in result["leader_cycles"]:
        patch = "-" if c["first_patch_s"] is None else f"{c['first_patch_s']:.2f} s in"
        print(
            f"#   leader cycle at +{c['at']:.0f} s: ran {c['ran']} targets in {c['wall']:.2f} s, "
            f"applied {c['applied']} ({c['held_back_applied']} of the held-back), first patch "
            f"{patch}"
        )
    if first is not None:
        total = first["at"] + first["first_patch_s"]
        print(
            f"# first patch {total:.2f} s after the leader's last renewal (bar: lease {lease} s "
            f"+ one cycle {interval:g} s = {lease + interval:g} s); fits adopted in the leader "
            f"cycles: {result['fits_in_leader_cycles']}"
        )
    else:
        print("# no patch in the standby's first interval as leader")


def _load() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


async def drive(args: argparse.Namespace) -> int:
    require_binaries()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; known: {', '.join(MODES)}")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    everything: dict[str, Any] = {}
    for n in [int(x) for x in args.targets.split(",")]:
        data, end, backfill_seconds = prepare_tsdb(workdir, n, args.history_days, args.jobs)
        took = f"{backfill_seconds:.0f} s" if backfill_seconds else "cached"
        print(f"# {n} targets: TSDB ready ({took})", file=sys.stderr)
        start = end - (args.cycles + 2) * args.advance - 1800.0 + 0.5
        start = math.floor(start / STEP) * STEP  # cycles on minute boundaries
        server = PrometheusServer(data, ready_timeout_seconds=120.0).start()
        try:
            results: dict[str, dict[str, Any]] = {}
            for mode in modes:
                load_before = _load()
                with tempfile.TemporaryDirectory() as tmp:
                    results[mode] = await run_mode(
                        args, n, mode, server.url, start, Path(tmp) / "out.json", server.pid
                    )
                results[mode]["load"] = f"{load_before} -> {_load()}"
                print(
                    f"# {n} targets, {mode}: done (load {results[mode]['load']})", file=sys.stderr
                )
        finally:
            server.stop()
        failover = results.pop("failover", None)
        if failover is not None:
            _print_failover(n, failover)
        figures = {m: summarise(r) for m, r in results.items()}
        cmp = (
            compare(results["optimised"], results["baseline"])
            if "optimised" in results and "baseline" in results
            else None
        )
        everything[str(n)] = {
            "figures": {m: vars(f) for m, f in figures.items()},
            "compare": cmp,
            "load": {m: r["load"] for m, r in results.items()},
            "backfill_seconds": backfill_seconds,
            "cycles": {
                m: [{k: v for k, v in c.items() if k != "decisions"} for c in r["cycles"]]
                for m, r in results.items()
            },
        }
        base = figures.get("baseline")
        for mode, f in figures.items():
            ratio = (
                f"{base.steady_cpu / f.steady_cpu:.0f}x"
                if base is not None and mode != "baseline" and f.steady_cpu > 0
                else ""
            )
            rows.append(
                f"| {n} | {mode} | {f.cold_wall:.1f} | {f.steady_p50:.2f} | {f.steady_p95:.2f} "
                f"| {f.cold_cpu:.1f} | {f.steady_cpu:.2f} | {ratio} | {f.rss_mib:.0f} "
                f"({f.controller_rss_mib:.0f} + {f.workers_rss_mib:.0f}) "
                f"| {f.cold_requests:.0f} | {f.requests:.1f} | {f.bytes / 1024:.1f} "
                f"| {f.cold_hpa_gets:.0f} | {f.hpa_gets:.1f} | {f.hpa_lists} / {f.hpa_watches} "
                f"| {f.writes:.1f} ({f.writes / args.advance:.2f}/s) "
                f"| {f.refits:.1f} | {f.problems} | {f.cold_undecided} "
                f"| {f.configured_landed_s:.1f} | {f.max_loop_lag:.2f} | {results[mode]['load']} |"
            )
        if cmp is not None:
            print(
                f"# {n} targets, optimised vs baseline: max |upper diff| "
                f"{cmp['max_abs_upper']:.4f} ({cmp['max_abs_upper_pods']:.3f} pods, "
                f"{100 * cmp['max_rel_upper']:.2f} %), decisions differing "
                f"{cmp['decisions_differing']}/{cmp['decisions_total']} (max by "
                f"{cmp['max_decision_diff']}), model choice differing {cmp['model_differing']}",
                file=sys.stderr,
            )
    header = (
        "| targets | mode | cold s | steady p50 s | steady p95 s | cold CPU s "
        "| steady CPU s/cycle | CPU ratio vs baseline | peak RSS MiB (controller + workers) "
        "| cold prom req "
        "| prom req/cycle | prom KiB/cycle | cold HPA GETs | HPA reads per steady cycle "
        "| HPA lists / watches | writes per steady cycle (per s of clock) | refits/cycle "
        "| problems | undecided after cold | auto landed s | max loop lag s | load 1m/5m |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    print(header)
    print("\n".join(rows))
    for n, item in everything.items():
        for mode, mode_cycles in item["cycles"].items():
            print(
                f"\n{n} targets, {mode}, per cycle (CPU s: controller (its event-loop thread) / "
                "fit workers / API double's process / Prometheus):"
            )
            for index, c in enumerate(mode_cycles):
                split = c.get("cpu_split", {})
                parts = f"{split.get('controller', 0.0):.2f} ({split.get('event_loop', 0.0):.2f})"
                parts += "".join(
                    f" / {split.get(k, 0.0):.2f}" for k in ("workers", "api_double", "prometheus")
                )
                print(
                    f"- {'cold' if index == 0 else f'steady {index}'}: wall {c['wall']:.2f} s, "
                    f"writes {c.get('writes', 0)}, CPU {parts}"
                )
        if item["compare"] is not None:
            c = item["compare"]
            print(
                f"\n{n} targets, optimised vs baseline, per target and cycle: max |upper diff| "
                f"{c['max_abs_upper']:.4f} ({c['max_abs_upper_pods']:.3f} pods, "
                f"{100 * c['max_rel_upper']:.1f} %); decisions differing "
                f"{c['decisions_differing']}/{c['decisions_total']} (max "
                f"{c['max_decision_diff']} replica(s)); auto chose another model in "
                f"{c['model_differing']}; where both kept the same model: max |upper diff| "
                f"{c['same_model_max_abs_upper']:.4f} ({100 * c['same_model_max_rel_upper']:.1f} "
                f"%), decisions differing {c['same_model_decisions_differing']}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", default="10,100", help="comma-separated target counts")
    p.add_argument("--history-days", type=float, default=14.0, help="history backfilled (14)")
    p.add_argument("--cycles", type=int, default=5, help="steady cycles after the cold one (5)")
    p.add_argument(
        "--baseline-cycles",
        type=int,
        help="steady cycles of the baseline (default --cycles; each refits every target)",
    )
    p.add_argument("--advance", type=float, default=STEP, help="clock move per cycle, s (60)")
    p.add_argument("--fit-workers", type=int, default=2, help="fit processes (2; 0: a thread)")
    p.add_argument("--concurrency", type=int, default=16, help="targets in flight (16)")
    p.add_argument("--modes", default="optimised,baseline", help=f"of {', '.join(MODES)}")
    p.add_argument("--jobs", type=int, default=2, help="parallel promtool runs (2)")
    p.add_argument("--workdir", default="/tmp/predictive-scaler-scale", help="TSDB cache")
    p.add_argument("--profile", help="write cProfile stats of the steady cycles to this dir")
    p.add_argument(
        "--profile-cold", action="store_true", help="profile the cold cycle instead (--profile)"
    )
    p.add_argument("--json", help="write all figures as JSON here")
    # worker-only
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--kube-url", help=argparse.SUPPRESS)
    p.add_argument("--kube-token", help=argparse.SUPPRESS)
    p.add_argument("--prom-url", help=argparse.SUPPRESS)
    p.add_argument("--prom-pid", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--start", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.baseline_cycles is None:
        args.baseline_cycles = args.cycles
    if args.worker:
        args.targets = int(args.targets)
        worker = run_failover if args.mode == "failover" else run_worker
        result = asyncio.run(worker(args))
        Path(args.out).write_text(json.dumps(result))
        if args.profile:
            stats = pstats.Stats(args.profile, stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(25)
        return 0
    return asyncio.run(drive(args))


if __name__ == "__main__":
    sys.exit(main())
