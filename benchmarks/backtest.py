"""Scaling benchmark: every shared trace through reactive HPA, predictive-scaler and the
oracle at several warm-ups (issue 3), and predictive against the cheap alternatives at equal
GPU-hours (issue 13: each swept over its knob). Prints Markdown tables.

    python benchmarks/backtest.py [--warmups 5m,10m,15m] [--jobs 2] [--traces DIR]
    python benchmarks/backtest.py --warmups 10m --frontier   # the issue 13 comparison
    python benchmarks/backtest.py --warmups 10m --frontier --max-shortfall-share 0.01
        # and an objective run: the quantile chosen at each refit from the history before it
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from predictive_scaler.backtest import FloatArray, SimulationSettings, simulate
from predictive_scaler.baselines import BASELINES, SweepSettings, compute_iso_cost
from predictive_scaler.config import parse_duration
from predictive_scaler.objective import Objective, choose_headroom
from predictive_scaler.traces import load_documented_trace

DEFAULT_TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"


def run_one(
    path: Path,
    warmup: float,
    settings: SimulationSettings,
    frontier: bool,
    objective: Objective | None = None,
) -> dict[str, object]:
    trace = load_documented_trace(path)
    started = time.perf_counter()
    settings = replace(settings, warmup_seconds=warmup)
    headroom = None
    if objective is not None:
        chooser_seconds: list[float] = []

        def headroom(window: FloatArray) -> float | None:
            began = time.process_time()
            choice = choose_headroom(window, trace.step_seconds, settings, objective)
            chooser_seconds.append(time.process_time() - began)
            return choice.quantile

    result = simulate(
        trace.values,
        trace.step_seconds,
        settings,
        sweep=SweepSettings() if frontier else None,
        headroom=headroom,
    )
    runs = result.runs
    reactive = runs["reactive"].underprovisioned_minutes
    iso = {
        name: (v.shortfall_minutes, v.ratio, v.within_sweep)
        for name, v in result.iso_cost().items()
    }
    extra: dict[str, object] = {}
    if objective is not None:
        run = runs["objective"]
        measured = (len(result.demand) - result.eval_start) * trace.step_seconds / 60
        extra = {
            "objective": objective.describe(),
            "limit": objective.max_shortfall_share,
            "chosen": Counter(q for _, q in result.headroom),
            "objective_share": run.underprovisioned_minutes / measured,
            "objective_iso": {
                name: compute_iso_cost(
                    [(p.gpu_hours, p.underprovisioned_minutes) for p in points],
                    run.gpu_hours,
                    run.underprovisioned_minutes,
                )
                for name, points in result.frontier.items()
                if name in BASELINES
            },
            "chooser_cpu_s": (max(chooser_seconds), sum(chooser_seconds) / len(chooser_seconds))
            if chooser_seconds
            else (0.0, 0.0),
        }
    return {
        **extra,
        "iso": iso,
        "trace": path.name,
        "days": trace.span_seconds / 86_400,
        "warmup_min": warmup / 60,
        "seconds": time.perf_counter() - started,
        **{f"{k}_under": r.underprovisioned_minutes for k, r in runs.items()},
        **{f"{k}_gpu": r.gpu_hours for k, r in runs.items()},
        **{f"{k}_events": r.scale_events for k, r in runs.items()},
        **{f"{k}_unserved": r.unserved_fraction for k, r in runs.items()},
        "under_ratio": runs["predictive"].underprovisioned_minutes / reactive if reactive else 0.0,
        "gpu_ratio": runs["predictive"].gpu_hours / runs["oracle"].gpu_hours,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--only", help="comma-separated file names")
    parser.add_argument("--warmups", default="5m,10m,15m")
    parser.add_argument("--quantile", type=float, default=0.9)
    parser.add_argument(
        "--floor-quantile", type=float, default=None, help="history floor (0: off, the default)"
    )
    parser.add_argument("--scale-down-delay", default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--max-shortfall-share", type=float, help="objective run: at most this share short"
    )
    parser.add_argument(
        "--shortfall-price", type=float, help="objective run: GPU-minutes per short pod-minute"
    )
    parser.add_argument(
        "--frontier", action="store_true", help="also sweep the baselines (issue 13 table)"
    )
    args = parser.parse_args()

    paths = sorted(p for p in args.traces.glob("*.csv*") if not p.name.endswith("_tokens.csv"))
    if args.only:
        wanted = set(args.only.split(","))
        paths = [p for p in paths if p.name in wanted]
    warmups = [parse_duration(w) for w in args.warmups.split(",")]
    settings = SimulationSettings(quantile=args.quantile)
    if args.floor_quantile is not None:
        settings = replace(settings, floor_quantile=args.floor_quantile)
    if args.scale_down_delay:
        delay = parse_duration(args.scale_down_delay, allow_zero=True)
        settings = replace(
            settings, decision=replace(settings.decision, scale_down_delay_seconds=delay)
        )
    objective = None
    if args.max_shortfall_share is not None or args.shortfall_price is not None:
        objective = Objective(args.max_shortfall_share, args.shortfall_price)
    jobs = [(p, w) for p in paths for w in warmups]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, p, w, settings, args.frontier, objective) for p, w in jobs]
        rows = []
        for i, future in enumerate(futures, 1):
            rows.append(future.result())
            print(
                f"[{i}/{len(jobs)}] {rows[-1]['trace']} warm-up {rows[-1]['warmup_min']:g}m "
                f"{rows[-1]['seconds']:.0f}s",
                file=sys.stderr,
            )

    print(
        "| trace | days | warm-up | under-provisioned min (reactive / predictive / oracle) "
        "| predictive ÷ reactive | GPU-h (reactive / predictive / oracle) "
        "| predictive ÷ oracle | scale events (r / p / o) | sim s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['trace']} | {r['days']:.1f} | {r['warmup_min']:g}m "
            f"| {r['reactive_under']:.0f} / {r['predictive_under']:.0f} / {r['oracle_under']:.0f} "
            f"| {r['under_ratio']:.3f} "
            f"| {r['reactive_gpu']:.0f} / {r['predictive_gpu']:.0f} / {r['oracle_gpu']:.0f} "
            f"| {r['gpu_ratio']:.3f} "
            f"| {r['reactive_events']} / {r['predictive_events']} / {r['oracle_events']} "
            f"| {r['seconds']:.0f} |"
        )
    if args.frontier:
        print_iso_cost(rows)
    if objective is not None:
        print_objective(rows)
    return 0


def print_objective(rows: list[dict[str, Any]]) -> None:
    """The objective run: what it chose, whether it met its objective out of sample, and
    how it compares at its own GPU-hours with predictive's default and the baselines."""
    print()
    print(
        "| trace | objective | chosen at the refits | objective run: min short (share), "
        "GPU-h ÷ oracle | met | default p90: min short, GPU-h ÷ oracle "
        "| best alternative at the objective run's GPU-h | ratio | chooser CPU s (max / mean) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        iso = r.get("objective_iso") or {}
        chosen = ", ".join(f"p{100 * q:g} x{n}" for q, n in sorted(r["chosen"].items()))
        limit = r["limit"]
        share = r["objective_share"]
        if limit is None:
            met = "-"
        elif share <= limit:
            met = "yes"
        else:
            met = f"**no**, by {100 * (share - limit):.2f} points"
        if iso:
            best = min(iso, key=lambda name: iso[name].shortfall_minutes)
            ratio = iso[best].ratio
            alt = (
                f"{best} {iso[best].shortfall_minutes:,.0f}{'' if iso[best].within_sweep else '*'}"
            )
            ratio_s = "-" if ratio is None else f"{ratio:.2f}"
        else:
            alt, ratio_s = "(no --frontier)", "-"
        worst, mean = r["chooser_cpu_s"]
        print(
            f"| {r['trace']} | {r['objective']} | {chosen} "
            f"| {r['objective_under']:,.0f} ({100 * share:.2f}%), "
            f"{r['objective_gpu'] / r['oracle_gpu']:.2f}x | {met} "
            f"| {r['predictive_under']:,.0f}, {r['gpu_ratio']:.2f}x | {alt} | {ratio_s} "
            f"| {worst:.1f} / {mean:.1f} |"
        )


def print_iso_cost(rows: list[dict[str, Any]]) -> None:
    """Predictive at its defaults against each alternative at the same GPU-hours."""
    print()
    print(
        "| trace | days | predictive: min short, GPU-h ÷ oracle "
        + "".join(f"| {name} at equal GPU-h " for name in BASELINES)
        + "| best alternative | ratio | bar | met | ÷ reactive (bar 0.25), GPU ÷ oracle (1.15) |"
    )
    print("|---|---|---" + "|---" * len(BASELINES) + "|---|---|---|---|---|")
    for r in rows:
        iso: dict[str, tuple[float, float | None, bool]] = r["iso"]
        best = min(iso, key=lambda name: iso[name][0])
        short, ratio, _inside = iso[best]
        under = r["predictive_under"]
        bar = 0.5 if short >= 60 else 1.0
        met = under <= bar * short
        cells = "".join(
            f"| {v[0]:,.0f}{'' if v[2] else '*'} ({'-' if v[1] is None else f'{v[1]:.2f}'}) "
            for v in iso.values()
        )
        print(
            f"| {r['trace']} | {r['days']:.1f} | {under:,.0f}, {r['gpu_ratio']:.2f}x "
            f"{cells}| {best} {short:,.0f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}'} | {bar:g} "
            f"| {'yes' if met else '**no**'} "
            f"| {r['under_ratio']:.3f}, {r['gpu_ratio']:.3f}"
            f"{'' if r['under_ratio'] <= 0.25 and r['gpu_ratio'] <= 1.15 else ' **no**'} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
