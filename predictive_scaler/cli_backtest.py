"""The ``backtest`` command: its flags and its body (a trace, or a configured target's own
history, through reactive HPA, this controller, an oracle and the cheap alternatives)."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from predictive_scaler.cli_args import (
    duration_arg,
    floor_quantile_arg,
    fraction_arg,
    positive_float_arg,
    positive_int_arg,
)
from predictive_scaler.cli_objective import (
    add_objective_flags,
    objective_of,
    objective_usage_error,
    report_objective,
)
from predictive_scaler.config import ConfigError, load_config_file

BUNDLED_TRACE = "nab_aws_elb_request_count_5min.csv"

_POLICY_FLAGS = {
    "warmup": "warmup_seconds",
    "interval": "interval_seconds",
    "model": "model",
    "quantile": "quantile",
    "floor_quantile": "floor_quantile",
    "history": "history_seconds",
    "refit": "refit_interval_seconds",
    "scale_up_step": "scale_up_step",
    "scale_down_delay": "scale_down_delay_seconds",
    "scale_down_step": "scale_down_step",
    "step": "step_seconds",
}
"""Backtest flags that set a policy field; unset, the field comes from the target's policy
(with --config) or the configuration's defaults (a trace)."""


def _target_arg(text: str) -> str | float:
    """``NAMESPACE/NAME`` of a configured target; a number is the old spelling of
    ``--target-value``."""
    if "/" in text:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAMESPACE/NAME of a target in --config, got {text!r}"
        ) from None


def add_backtest(commands: Any) -> None:
    from predictive_scaler.backtest import DEFAULT_POLICY as P
    from predictive_scaler.config import format_duration as d

    p = commands.add_parser(
        "backtest",
        help="replay a demand trace, or a configured target's own history, through reactive "
        "HPA, this controller, an oracle and the cheap alternatives",
        description=(
            "Forecast accuracy of every model (rolling origin) and the scaling outcome of "
            "reactive HPA, predictive-scaler, a perfect-foresight oracle and the cheap "
            "alternatives (a lower HPA target, a static floor, an hour-of-week schedule, PHPA), "
            "each swept over its knob, compared at predictive's GPU-hours, on one trace. "
            "Without --trace, a bundled 14-day trace (AWS ELB request counts, 5-minute "
            "steps) is used. With --config and --target NAMESPACE/NAME, the target's own "
            "demand history is read from Prometheus with its configured queries and replayed "
            "with its policy (what-if); flags given explicitly override the policy."
        ),
    )
    source = p.add_argument_group("what-if on a configured target")
    source.add_argument("--config", type=Path, metavar="FILE", help="the configuration file")
    source.add_argument(
        "--target",
        type=_target_arg,
        metavar="NAMESPACE/NAME",
        help="the target (its HPA) in --config whose history to replay",
    )
    source.add_argument("--prometheus-url", help="Prometheus base URL (overrides prometheus.url)")
    source.add_argument(
        "--since", type=duration_arg, default=14 * 86_400.0, help="history to read (14d)"
    )
    source.add_argument("--signal", help="the target's signal to replay (its first)")
    source.add_argument(
        "--kubeconfig",
        help="read the HPA (base and max replicas, target, scale target's pods) from this "
        "cluster; without it or --context, no cluster is read",
    )
    source.add_argument("--context", help="kubeconfig context (reads the HPA, as --kubeconfig)")
    p.add_argument("--trace", type=Path, help="CSV (or .csv.gz) with timestamp,value columns")
    p.add_argument("--column", default="value", help="value column to read (default: value)")
    p.add_argument("--horizon", type=duration_arg, help="forecast horizon (the warm-up)")
    policy = p.add_argument_group(
        "policy (default: the target's policy with --config, else the configuration defaults)"
    )
    policy.add_argument("--warmup", type=duration_arg, help=f"pod warm-up ({d(P.warmup_seconds)})")
    policy.add_argument(
        "--interval", type=duration_arg, help=f"cycle interval ({d(P.interval_seconds)})"
    )
    policy.add_argument("--model", help=f"model for the controller ({P.model})")
    policy.add_argument("--quantile", type=fraction_arg, help=f"upper quantile ({P.quantile})")
    policy.add_argument(
        "--floor-quantile",
        type=floor_quantile_arg,
        help=f"history floor: this quantile of the fitted history, 0 off ({P.floor_quantile:g})",
    )
    add_objective_flags(policy)
    policy.add_argument(
        "--history", type=duration_arg, help=f"history each fit sees ({d(P.history_seconds)})"
    )
    policy.add_argument(
        "--refit", type=duration_arg, help=f"refit interval ({d(P.refit_interval_seconds)})"
    )
    policy.add_argument(
        "--scale-up-step",
        type=positive_int_arg,
        help=f"largest raise of minReplicas per cycle ({P.scale_up_step})",
    )
    policy.add_argument(
        "--scale-down-delay",
        type=duration_arg,
        help=f"how long the forecast stays lower before a lowering "
        f"({d(P.scale_down_delay_seconds)})",
    )
    policy.add_argument(
        "--scale-down-step",
        type=positive_int_arg,
        help=f"largest lowering of minReplicas per cycle ({P.scale_down_step})",
    )
    policy.add_argument(
        "--step", type=duration_arg, help="what-if only: range-query step (the target's step)"
    )
    hpa = p.add_argument_group("the HPA")
    hpa.add_argument(
        "--target-value",
        type=positive_float_arg,
        help="HPA target per pod (the signal's targetPerPod, else 0.7)",
    )
    hpa.add_argument(
        "--peak-replicas",
        type=positive_int_arg,
        help="a trace only: scale it so that its p99 needs this many replicas (20)",
    )
    hpa.add_argument("--min-replicas", type=positive_int_arg, help="HPA minReplicas (1)")
    hpa.add_argument("--max-replicas", type=positive_int_arg, help="HPA maxReplicas (3 x peak)")
    p.add_argument("--only", choices=("forecast", "scaling"), help="run one half only")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument("--plot", type=Path, help="draw demand, capacity and replicas to this PNG")
    p.add_argument(
        "--no-frontier",
        action="store_true",
        help="skip the baselines and the sweeps (faster; no frontier, no iso-cost figures)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_backtest)


def _backtest_usage_error(args: argparse.Namespace) -> str | None:
    problem = objective_usage_error(args)
    if problem is not None:
        return problem
    if args.config is not None:
        if args.trace is not None:
            return "--trace and --config are exclusive (a trace, or a target's own history)"
        if not isinstance(args.target, str):
            return "--config needs --target NAMESPACE/NAME"
        if args.peak_replicas is not None:
            return "--peak-replicas scales a trace; a target's own demand is replayed as it is"
        return None
    if isinstance(args.target, str):
        return "--target NAMESPACE/NAME needs --config"
    for flag in ("prometheus_url", "signal", "step", "kubeconfig", "context"):
        if getattr(args, flag) is not None:
            return f"--{flag.replace('_', '-')} needs --config and --target"
    return None


def run_backtest(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models import MODEL_NAMES, InsufficientHistory
    from models.evaluation import evaluate
    from predictive_scaler.backtest import (
        DEFAULT_POLICY,
        evaluation_start,
        simulate,
        simulate_demand,
        simulation_settings,
    )
    from predictive_scaler.baselines import SweepSettings
    from predictive_scaler.forecasting import steps_for
    from predictive_scaler.progress import ProgressBar
    from predictive_scaler.traces import TraceError, load_trace

    problem = _backtest_usage_error(args)
    if problem is not None:
        print(f"predictive-scaler backtest: error: {problem}", file=sys.stderr)
        return 2
    if args.model is not None and args.model not in MODEL_NAMES:
        print(
            f"error: unknown model {args.model!r}; known: {', '.join(MODEL_NAMES)}", file=sys.stderr
        )
        return 2
    if args.plot and not _plotting_installed():
        # Checked before the backtest runs (minutes on a long trace), not when drawing.
        print(
            "error: --plot needs matplotlib, which is not installed; install the plot extra: "
            "pip install 'predictive-scaler[plot]'",
            file=sys.stderr,
        )
        return 2
    overrides = {
        field: getattr(args, flag)
        for flag, field in _POLICY_FLAGS.items()
        if getattr(args, flag) is not None
    }
    bar = (lambda label: None) if args.quiet else ProgressBar
    report: dict[str, Any] = {}
    if args.config is not None:
        from predictive_scaler.whatif import WhatIfError, WhatIfRequest, read_target_history

        try:
            config = load_config_file(args.config)
        except ConfigError as exc:
            print(f"{args.config}: invalid configuration:\n{exc}", file=sys.stderr)
            return 1
        request = WhatIfRequest(
            target=args.target,
            since_seconds=args.since,
            prometheus_url=args.prometheus_url,
            signal=args.signal,
            policy_overrides=overrides,
            hpa_target=args.target_value,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            read_cluster=args.kubeconfig is not None or args.context is not None,
            kubeconfig=args.kubeconfig,
            context=args.context,
        )
        try:
            history = read_target_history(config, request, progress=bar("prometheus"))
        except WhatIfError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        name, values, step = history.name, history.demand, history.step_seconds
        span, settings = history.span_seconds, history.settings
        report["target"] = {
            "name": name,
            "query": history.query,
            "start": history.start.isoformat(),
        }
        print(f"query: {history.query}")

        def run_scaling(progress: Any, sweep: Any, headroom: Any) -> Any:
            return simulate_demand(
                values, step, settings, progress=progress, sweep=sweep, headroom=headroom
            )

        notes: tuple[str, ...] = history.notes
        configured = history.policy.objective
    else:
        try:
            if args.trace is None:
                with resources.as_file(
                    resources.files("predictive_scaler") / "data" / BUNDLED_TRACE
                ) as bundled:
                    trace = load_trace(bundled, args.column)
            else:
                trace = load_trace(args.trace, args.column)
        except TraceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        name, values, step, span = trace.name, trace.values, trace.step_seconds, trace.span_seconds
        peak = args.peak_replicas or 20
        settings = simulation_settings(
            replace(DEFAULT_POLICY, **overrides),
            target=args.target_value or (args.target if args.target is not None else 0.7),
            peak_replicas=peak,
            min_replicas=args.min_replicas or 1,
            max_replicas=args.max_replicas or 3 * peak,
        )

        def run_scaling(progress: Any, sweep: Any, headroom: Any) -> Any:
            return simulate(
                values, step, settings, progress=progress, sweep=sweep, headroom=headroom
            )

        notes = ()
        configured = None
    report.update({"trace": name, "step_seconds": step, "points": len(values)})
    kind = "trace" if args.config is None else "target"
    print(f"{kind} {name}: {len(values)} points at {step:g}s ({span / 86_400:.1f} days)")
    for note in notes:
        print(f"note: {note}")

    if args.only != "scaling":
        horizon = steps_for(args.horizon or settings.warmup_seconds, step)
        eval_start = evaluation_start(len(values), step)
        try:
            scores = evaluate(
                values,
                step,
                horizon,
                MODEL_NAMES,
                level=settings.quantile,
                history_points=steps_for(settings.history_seconds, step),
                refit_points=steps_for(settings.refit_interval_seconds, step),
                eval_start=eval_start,
                progress=bar("forecast"),
            )
        except InsufficientHistory as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        key = f"p{round(settings.quantile * 100)}"
        report["forecast"] = {
            "horizon_seconds": horizon * step,
            "quantile": settings.quantile,
            "models": {
                name: {
                    "mase": s.mase,
                    f"pinball_{key}": s.pinball,
                    f"coverage_{key}": s.coverage,
                    "peak_mase": s.peak_mase,
                    f"peak_pinball_{key}": s.peak_pinball,
                    f"peak_coverage_{key}": s.peak_coverage,
                    "fit_seconds": s.fit_seconds,
                    "forecast_ms": s.forecast_ms,
                    "origins": s.origins,
                    **({"chosen": s.chosen} if s.chosen else {}),
                }
                for name, s in scores.items()
            },
        }
        _print_forecast_table(scores, horizon * step, key)

    if args.only != "forecast":
        sweep = None if args.no_frontier else SweepSettings()
        # A flag wins over the target's configured objective, as every policy flag does.
        objective = objective_of(args) or configured
        headroom = None
        if objective is not None:
            from predictive_scaler.objective import choose_headroom

            def headroom(window: Any) -> float | None:
                return choose_headroom(window, step, settings, objective).quantile

        result = run_scaling(bar("scaling"), sweep, headroom)
        report["scaling"] = {name: run.figures() for name, run in result.runs.items()}
        if sweep is not None:
            report["frontier"] = {
                name: [[p.gpu_hours, p.underprovisioned_minutes] for p in points]
                for name, points in result.frontier.items()
            }
            report["frontier_knobs"] = {
                name: [p.knob for p in points] for name, points in result.frontier.items()
            }
            report["iso_cost"] = {
                name: {
                    "shortfall_minutes": iso.shortfall_minutes,
                    "ratio": iso.ratio,
                    "within_sweep": iso.within_sweep,
                }
                for name, iso in result.iso_cost().items()
            }
        report["scaling_settings"] = {
            "warmup_seconds": settings.warmup_seconds,
            "interval_seconds": settings.cycle_seconds,
            "target": settings.target,
            "peak_replicas": settings.peak_replicas,
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "model": settings.model,
            "quantile": settings.quantile,
            "scale_up_step": settings.decision.scale_up_step,
            "scale_down_delay_seconds": settings.decision.scale_down_delay_seconds,
            "scale_down_step": settings.decision.scale_down_step,
            "evaluation_start_seconds": result.eval_start * step,
        }
        _print_scaling_table(result)
        if sweep is not None:
            _print_iso_cost(result)
        if objective is not None:
            report["objective"] = report_objective(result, settings, objective)
        if result.notes:
            print("notes: " + "; ".join(result.notes))
        if args.plot:
            from predictive_scaler.plot import draw_backtest

            draw_backtest(
                result,
                f"{name}: warm-up {settings.warmup_seconds / 60:g} min, "
                f"target {settings.target}, {settings.peak_replicas} peak replicas",
                args.plot,
            )
            print(f"plot written to {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


def _plotting_installed() -> bool:
    """matplotlib is the optional ``[plot]`` extra (the image leaves it out)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _print_forecast_table(scores: Any, horizon_seconds: float, key: str) -> None:
    print(f"\nforecast accuracy at {horizon_seconds / 60:g} min ahead (rolling origin):")
    print("  per step at the horizon | window peak over steps 1..horizon (what the decision uses)")
    print(
        f"  {'model':<15}{'MASE':>8}{'pinball ' + key:>14}{'coverage ' + key:>14}"
        f"{'peak MASE':>11}{'peak pinball':>14}{'peak coverage':>15}"
        f"{'fit s':>8}{'forecast ms':>13}"
    )
    for name, s in scores.items():
        print(
            f"  {name:<15}{s.mase:>8.3f}{s.pinball:>14.3f}{s.coverage:>14.3f}"
            f"{s.peak_mase:>11.3f}{s.peak_pinball:>14.3f}{s.peak_coverage:>15.3f}"
            f"{s.fit_seconds:>8.2f}{s.forecast_ms:>13.3f}"
        )
    chosen = scores["auto"].chosen if "auto" in scores else None
    if chosen:
        picks = ", ".join(f"{k} x{v}" for k, v in sorted(chosen.items(), key=lambda kv: -kv[1]))
        print(f"  auto chose: {picks}")


def _print_scaling_table(result: Any) -> None:
    print("\nscaling over the evaluation window:")
    print(
        f"  {'policy':<12}{'under-provisioned min':>23}{'unserved':>10}{'GPU-hours':>11}"
        f"{'scale events':>14}"
    )
    for name, run in result.runs.items():
        print(
            f"  {name:<12}{run.underprovisioned_minutes:>23.0f}"
            f"{100 * run.unserved_fraction:>9.2f}%{run.gpu_hours:>11.1f}{run.scale_events:>14}"
        )


def _print_iso_cost(result: Any) -> None:
    predictive = result.runs["predictive"]
    print(
        f"\nat predictive's {predictive.gpu_hours:.1f} GPU-hours "
        f"({predictive.underprovisioned_minutes:.0f} min short), each alternative swept over "
        "its knob is short:"
    )
    print(f"  {'alternative':<14}{'minutes short':>15}{'predictive / it':>17}")
    for name, iso in result.iso_cost().items():
        ratio = "-" if iso.ratio is None else f"{iso.ratio:.2f}"
        edge = "" if iso.within_sweep else "  (outside its sweep: nearest end)"
        print(f"  {name:<14}{iso.shortfall_minutes:>15.0f}{ratio:>17}{edge}")
