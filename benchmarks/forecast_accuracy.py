"""Forecast accuracy benchmark (issue 2): every shared trace at horizons of 5, 10 and 15
minutes, every model and ``auto``, by rolling origin; then the cost of a full ``auto`` fit
on 14 days of 1-minute history and of one forecast between refits. Prints Markdown.

    python benchmarks/forecast_accuracy.py [--horizons 5m,10m,15m] [--jobs 2] [--no-cost]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from models import MODEL_NAMES, fit_model
from models.evaluation import ModelScore, evaluate
from predictive_scaler.backtest import evaluation_start
from predictive_scaler.config import parse_duration
from predictive_scaler.forecasting import steps_for
from predictive_scaler.traces import load_trace

DEFAULT_TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
BASELINES = ("persistence", "seasonal_naive")


def run_one(
    path: Path, horizon: float, refit: float
) -> tuple[str, float, float, int, dict[str, ModelScore]]:
    trace = load_trace(path)
    step = trace.step_seconds
    h = steps_for(horizon, step)
    scores = evaluate(
        trace.values,
        step,
        h,
        MODEL_NAMES,
        history_points=steps_for(7 * 86_400, step),
        refit_points=steps_for(refit, step),
        eval_start=evaluation_start(len(trace.values), step),
    )
    return path.name, trace.span_seconds / 86_400, step, h, scores


def cost_of_auto(path: Path) -> tuple[float, float]:
    """(seconds for a full auto fit on 14 days, ms per forecast + update between refits)."""
    trace = load_trace(path)
    y = trace.values[: steps_for(14 * 86_400, trace.step_seconds)]
    started = time.perf_counter()
    result = fit_model("auto", y, trace.step_seconds, horizon=11)
    fit_seconds = time.perf_counter() - started
    rest = trace.values[len(y) : len(y) + 500]
    started = time.perf_counter()
    for value in rest:
        result.model.predict(11, (0.9,))
        result.model.update(np.array([value]))
    return fit_seconds, 1000 * (time.perf_counter() - started) / len(rest)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--only", help="comma-separated file names")
    parser.add_argument("--horizons", default="5m,10m,15m")
    parser.add_argument("--refit", default="6h")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-cost", action="store_true", help="skip the cost of auto")
    args = parser.parse_args()
    paths = sorted(p for p in args.traces.glob("*.csv*") if not p.name.endswith("_tokens.csv"))
    if args.only:
        paths = [p for p in paths if p.name in set(args.only.split(","))]
    horizons = [parse_duration(h) for h in args.horizons.split(",")]
    refit = parse_duration(args.refit)

    # Horizons that round to the same number of steps on a coarse trace are one job.
    jobs = []
    for p in paths:
        step = load_trace(p).step_seconds
        seen: set[int] = set()
        for h in horizons:
            if steps_for(h, step) not in seen:
                seen.add(steps_for(h, step))
                jobs.append((p, h))
    results = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, p, h, refit) for p, h in jobs]
        for i, future in enumerate(futures, 1):
            results.append(future.result())
            print(f"[{i}/{len(jobs)}] {results[-1][0]} h={jobs[i - 1][1] / 60:g}m", file=sys.stderr)

    print("## Accuracy per trace, horizon and model\n")
    print(
        "MASE and pinball are scaled by the in-sample one-step naive MAE; coverage is the "
        "share of actuals at or below the p90.\n"
    )
    print(
        "| trace | step | horizon | model | MASE | pinball p90 | coverage p90 | fit s "
        "| forecast ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _days, step, h, scores in results:
        for model, s in scores.items():
            print(
                f"| {name} | {step:g}s | {h * step / 60:g}m | {model} | {s.mase:.3f} "
                f"| {s.pinball:.3f} | {s.coverage:.3f} | {s.fit_seconds:.3f} "
                f"| {s.forecast_ms:.3f} |"
            )

    print("\n## auto against the better baseline (traces of 7 days or more)\n")
    print(
        "| trace | step | horizon | auto MASE ÷ best baseline | auto pinball ÷ best baseline "
        "| auto coverage | auto chose |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, days, step, h, scores in results:
        if days < 7:
            continue
        best_mase = min(scores[b].mase for b in BASELINES)
        best_pin = min(scores[b].pinball for b in BASELINES)
        auto = scores["auto"]
        chose = ", ".join(
            f"{k} x{v}" for k, v in sorted((auto.chosen or {}).items(), key=lambda kv: -kv[1])
        )
        print(
            f"| {name} | {step:g}s | {h * step / 60:g}m | {auto.mase / best_mase:.3f} "
            f"| {auto.pinball / best_pin:.3f} | {auto.coverage:.3f} | {chose} |"
        )

    print("\n## Window-peak p90 coverage (traces of 7 days or more)\n")
    print(
        "The decision takes capacity for the highest point of the window (steps 1..horizon). "
        "'before' is the maximum of the per-step p90 path (what it took until issue 15); "
        "'after' is the window-peak bound. Peak MASE and pinball are over the realised peak.\n"
    )
    print(
        "| trace | step | horizon | model | per-step coverage | per-step MASE "
        "| per-step pinball | window-peak coverage before | after | peak MASE | peak pinball "
        "| auto chose |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, days, step, h, scores in results:
        if days < 7:
            continue
        for model in ("auto", *BASELINES):
            s = scores[model]
            chose = ", ".join(
                f"{k} x{v}" for k, v in sorted((s.chosen or {}).items(), key=lambda kv: -kv[1])
            )
            print(
                f"| {name} | {step:g}s | {h * step / 60:g}m | {model} | {s.coverage:.3f} "
                f"| {s.mase:.3f} | {s.pinball:.3f} | {s.path_peak_coverage:.3f} "
                f"| {s.peak_coverage:.3f} | {s.peak_mase:.3f} | {s.peak_pinball:.3f} | {chose} |"
            )
    if args.no_cost:
        return 0

    print("\n## Cost of auto on 14 days of 1-minute history\n")
    print("| trace | full auto fit s | forecast + update between refits, ms |")
    print("|---|---|---|")
    for name in ("twitter_stream_2021-08_1min.csv", "nasa_http_1995-08_1min.csv.gz"):
        path = args.traces / name
        if path.exists():
            fit_s, ms = cost_of_auto(path)
            print(f"| {name} | {fit_s:.2f} | {ms:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
