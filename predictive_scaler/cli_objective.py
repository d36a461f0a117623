"""``backtest`` with an objective (``--max-shortfall-share``, ``--shortfall-price``): the
quantile chosen at each refit, how that run did out of sample, and what it would choose
now (issue 13 item 4)."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING, Any

from predictive_scaler.cli_args import positive_float_arg

if TYPE_CHECKING:  # the command line imports numpy and the models only when it runs one
    from predictive_scaler.backtest import SimulationResult, SimulationSettings
    from predictive_scaler.objective import Objective


def add_objective_flags(policy: Any) -> None:
    """The objective's flags, in the backtest's policy group."""
    policy.add_argument(
        "--max-shortfall-share",
        type=share_arg,
        metavar="SHARE",
        help="objective: choose the quantile at each refit, from the history before it, as "
        "the cheapest with at most this share of minutes under-provisioned (off)",
    )
    policy.add_argument(
        "--shortfall-price",
        type=positive_float_arg,
        metavar="GPU_MINUTES",
        help="objective: choose the quantile at each refit as the least GPU-minutes plus "
        "this price per under-provisioned pod-minute (off)",
    )


def objective_usage_error(args: argparse.Namespace) -> str | None:
    if args.max_shortfall_share is not None and args.shortfall_price is not None:
        return "exactly one of --max-shortfall-share and --shortfall-price (one objective)"
    return None


def share_arg(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def objective_of(args: argparse.Namespace) -> Objective | None:
    """The objective the flags state, or None (off)."""
    from predictive_scaler.objective import Objective

    if args.max_shortfall_share is not None:
        return Objective(max_shortfall_share=args.max_shortfall_share)
    if args.shortfall_price is not None:
        return Objective(shortfall_price=args.shortfall_price)
    return None


def report_objective(
    result: SimulationResult, settings: SimulationSettings, objective: Objective
) -> dict[str, Any]:
    """Print and return what the objective chose at each refit, how its run did over the
    measured window (out of sample: each choice saw only the history before its refit), and
    what it would choose now, from the trace's last history."""
    from predictive_scaler.baselines import compute_iso_cost
    from predictive_scaler.forecasting import steps_for
    from predictive_scaler.objective import choose_headroom

    step = result.step_seconds
    run = result.runs["objective"]
    measured = (len(result.demand) - result.eval_start) * step / 60
    share = run.underprovisioned_minutes / measured if measured > 0 else 0.0
    limit = objective.max_shortfall_share
    met = None if limit is None else share <= limit
    # Every refit from the first decision on: each governs part of the measured window.
    chosen = {f"{t * step:g}": q for t, q in result.headroom}
    counts = Counter(chosen.values())
    history = result.demand[-steps_for(settings.history_seconds, step) :]
    now = choose_headroom(history, step, settings, objective)
    print(f"\nobjective: {objective.describe()}")
    picks = ", ".join(f"p{100 * q:g} x{n}" for q, n in sorted(counts.items()))
    print(f"  chosen at each refit (seconds from the start in --json): {picks}")
    verdict = ""
    if limit is not None:
        verdict = "; met" if met else f"; missed by {100 * (share - limit):.2f} points"
    print(
        f"  out of sample: {run.underprovisioned_minutes:.0f} of {measured:.0f} minutes short "
        f"({100 * share:.2f}%){verdict}, {run.gpu_hours:.1f} GPU-hours (predictive at "
        f"p{100 * settings.quantile:g}: {result.runs['predictive'].gpu_hours:.1f})"
    )
    if now.quantile is not None:
        print(f"  would choose p{100 * now.quantile:g} now: {now.reason}")
    else:
        print(f"  would choose nothing now: {now.reason}")
    iso = {
        name: compute_iso_cost(
            [(p.gpu_hours, p.underprovisioned_minutes) for p in points],
            run.gpu_hours,
            run.underprovisioned_minutes,
        )
        for name, points in result.frontier.items()
        if name not in ("predictive", "oracle")
    }
    for name, figures in iso.items():
        ratio = "-" if figures.ratio is None else f"{figures.ratio:.2f}"
        print(f"  at its GPU-hours {name} is short {figures.shortfall_minutes:.0f} min ({ratio})")
    return {
        "objective": objective.as_dict(),
        "chosen": chosen,
        "measured_minutes": measured,
        "shortfall_share": share,
        "met": met,
        "iso_cost": {
            name: {"shortfall_minutes": f.shortfall_minutes, "ratio": f.ratio}
            for name, f in iso.items()
        },
        "now": {
            "quantile": now.quantile,
            "met": now.met,
            "reason": now.reason,
            "candidates": [
                {
                    "quantile": c.quantile,
                    "gpu_hours": c.gpu_hours,
                    "underprovisioned_minutes": c.underprovisioned_minutes,
                    "unserved_pod_minutes": c.unserved_pod_minutes,
                    "shortfall_share": c.shortfall_share,
                }
                for c in now.candidates
            ],
        },
    }
