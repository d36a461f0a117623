"""The command line: backtest and validate-config here; run and recommend drive the cluster.

Each subcommand is a function taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predictive_scaler.config import ConfigError, load_config_file, parse_duration

if TYPE_CHECKING:
    from predictive_scaler.runtime import RunOptions

Handler = Callable[[argparse.Namespace], int]
BUNDLED_TRACE = "nab_aws_elb_request_count_5min.csv"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predictive-scaler",
        description="Keep GPU inference pods warm before traffic arrives.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_backtest(commands)
    _add_validate_config(commands)
    _add_config_schema(commands)
    _add_cluster_commands(commands)
    _add_status(commands)
    return parser


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _floor_quantile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 0.99:
        raise argparse.ArgumentTypeError(f"must be from 0 (off) to 0.99, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.5 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0.5, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


# -- backtest --------------------------------------------------------------------------


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


def _add_backtest(commands: Any) -> None:
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
        "--since", type=_duration, default=14 * 86_400.0, help="history to read (14d)"
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
    p.add_argument("--horizon", type=_duration, help="forecast horizon (the warm-up)")
    policy = p.add_argument_group(
        "policy (default: the target's policy with --config, else the configuration defaults)"
    )
    policy.add_argument("--warmup", type=_duration, help=f"pod warm-up ({d(P.warmup_seconds)})")
    policy.add_argument(
        "--interval", type=_duration, help=f"cycle interval ({d(P.interval_seconds)})"
    )
    policy.add_argument("--model", help=f"model for the controller ({P.model})")
    policy.add_argument("--quantile", type=_fraction, help=f"upper quantile ({P.quantile})")
    policy.add_argument(
        "--floor-quantile",
        type=_floor_quantile,
        help=f"history floor: this quantile of the fitted history, 0 off ({P.floor_quantile:g})",
    )
    policy.add_argument(
        "--history", type=_duration, help=f"history each fit sees ({d(P.history_seconds)})"
    )
    policy.add_argument(
        "--refit", type=_duration, help=f"refit interval ({d(P.refit_interval_seconds)})"
    )
    policy.add_argument(
        "--scale-up-step",
        type=_positive_int,
        help=f"largest raise of minReplicas per cycle ({P.scale_up_step})",
    )
    policy.add_argument(
        "--scale-down-delay",
        type=_duration,
        help=f"how long the forecast stays lower before a lowering "
        f"({d(P.scale_down_delay_seconds)})",
    )
    policy.add_argument(
        "--scale-down-step",
        type=_positive_int,
        help=f"largest lowering of minReplicas per cycle ({P.scale_down_step})",
    )
    policy.add_argument(
        "--step", type=_duration, help="what-if only: range-query step (the target's step)"
    )
    hpa = p.add_argument_group("the HPA")
    hpa.add_argument(
        "--target-value",
        type=_positive_float,
        help="HPA target per pod (the signal's targetPerPod, else 0.7)",
    )
    hpa.add_argument(
        "--peak-replicas",
        type=_positive_int,
        help="a trace only: scale it so that its p99 needs this many replicas (20)",
    )
    hpa.add_argument("--min-replicas", type=_positive_int, help="HPA minReplicas (1)")
    hpa.add_argument("--max-replicas", type=_positive_int, help="HPA maxReplicas (3 x peak)")
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

        def run_scaling(progress: Any, sweep: Any) -> Any:
            return simulate_demand(values, step, settings, progress=progress, sweep=sweep)

        notes: tuple[str, ...] = history.notes
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

        def run_scaling(progress: Any, sweep: Any) -> Any:
            return simulate(values, step, settings, progress=progress, sweep=sweep)

        notes = ()
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
        result = run_scaling(bar("scaling"), sweep)
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


# -- validate-config -------------------------------------------------------------------


def _add_validate_config(commands: Any) -> None:
    p = commands.add_parser("validate-config", help="check a configuration file offline")
    p.add_argument("file", type=Path, help="the config.yaml from the ConfigMap")
    p.set_defaults(handler=run_validate_config)


def run_validate_config(args: argparse.Namespace) -> int:
    try:
        config = load_config_file(args.file)
    except ConfigError as exc:
        print(f"{args.file}: invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    enabled = len(config.enabled_targets())
    print(f"{args.file}: valid ({len(config.targets)} targets, {enabled} enabled)")
    return 0


def _add_config_schema(commands: Any) -> None:
    p = commands.add_parser(
        "config-schema",
        help="print the JSON Schema of config.yaml (published as deploy/config.schema.json)",
    )
    p.set_defaults(handler=run_config_schema)


def run_config_schema(args: argparse.Namespace) -> int:
    from predictive_scaler.config_schema import config_schema

    print(json.dumps(config_schema(), indent=2, ensure_ascii=False))
    return 0


# -- cluster commands ------------------------------------------------------------------


def _add_cluster_commands(commands: Any) -> None:
    """`run` and `recommend`, which talk to Prometheus and the Kubernetes API."""
    from predictive_scaler.logs import LOG_FORMATS

    def config_source(p: Any) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--config", dest="config_file", metavar="FILE", help="config file")
        group.add_argument(
            "--config-map",
            metavar="NAMESPACE/NAME",
            help="ConfigMap holding config.yaml (watched and hot-reloaded by run)",
        )
        p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube)")
        p.add_argument("--context", help="kubeconfig context")
        p.add_argument("--prometheus-url", help="Prometheus base URL (overrides prometheus.url)")

    run = commands.add_parser(
        "run",
        help="the controller: forecast and raise HPA minReplicas one warm-up ahead",
        description=(
            "Run the controller until SIGTERM/SIGINT. Only the holder of the leader Lease "
            "patches HPAs; --dry-run patches nothing and logs every recommendation."
        ),
    )
    config_source(run)
    run.add_argument("--dry-run", action="store_true", help="decide and log, never patch")
    run.add_argument(
        "--metrics-port", type=int, help="port of /metrics, /healthz, /readyz (config: 8080)"
    )
    run.add_argument(
        "--metrics-bind-address",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="address /metrics, /healthz and /readyz listen on (default: 0.0.0.0, every "
        "interface; 127.0.0.1 behind a sidecar proxy)",
    )
    run.add_argument(
        "--restore-on-exit",
        action="store_true",
        help="on SIGTERM/SIGINT give every managed HPA its base minReplicas back",
    )
    run.add_argument("--identity", help="leader-election identity (default: $POD_NAME or host)")
    run.add_argument("--log-format", choices=LOG_FORMATS, default="auto", help="log format")
    run.add_argument(
        "--external-metrics-port",
        type=int,
        metavar="PORT",
        help="also serve the External Metrics API (external.metrics.k8s.io/v1beta1) over HTTPS "
        "on PORT (off by default; needs --tls-cert-file and --tls-key-file)",
    )
    run.add_argument("--tls-cert-file", metavar="FILE", help="PEM certificate for that server")
    run.add_argument("--tls-key-file", metavar="FILE", help="PEM private key for that server")
    run.add_argument(
        "--requestheader-client-ca-file",
        metavar="FILE",
        help="CA that signs the front proxy's (kube-aggregator's) client certificate; callers "
        "it presents are taken from X-Remote-User/X-Remote-Group (default: the "
        "requestheader-client-ca-file of kube-system/extension-apiserver-authentication)",
    )
    run.add_argument(
        "--requestheader-allowed-names",
        type=_name_list,
        default=(),
        metavar="NAMES",
        help="with --requestheader-client-ca-file: comma-separated common names the front "
        "proxy's certificate may have (default: any the CA signed)",
    )
    run.add_argument(
        "--authentication-skip-lookup",
        action="store_true",
        help="do not read kube-system/extension-apiserver-authentication (then only bearer "
        "tokens authenticate, unless --requestheader-client-ca-file is given)",
    )
    run.add_argument(
        "--shard-index",
        type=_non_negative_int,
        default=0,
        metavar="I",
        help="this controller's shard, 0 <= I < --shard-count (default 0)",
    )
    run.add_argument(
        "--shard-count",
        type=_positive_int,
        default=1,
        metavar="N",
        help="controllers sharing the targets by a stable hash of namespace/name, each with its "
        "own Lease <leaseName>-shard-I-of-N (default 1: all targets, the plain Lease)",
    )
    run.add_argument(
        "--fit-workers",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="fit models in N worker processes (default 0: a thread of the controller)",
    )
    run.add_argument(
        "--fit-timeout",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="budget of one fit from submission; a fit over it is abandoned, its worker "
        "process replaced, and the target holds on bad data that cycle (default 300)",
    )
    run.set_defaults(handler=run_controller_command)

    rec = commands.add_parser(
        "recommend",
        help="one dry-run pass: what the controller would set now, per target",
    )
    config_source(rec)
    rec.add_argument("--output", choices=("table", "json"), default="table", help="format")
    rec.set_defaults(handler=run_recommend_command)


def run_controller_command(args: argparse.Namespace) -> int:
    import asyncio

    from predictive_scaler.runtime import run_controller
    from predictive_scaler.sharding import Shard

    try:
        Shard(args.shard_index, args.shard_count)
    except ValueError as error:
        print(f"predictive-scaler run: error: {error}", file=sys.stderr)
        return 2
    return asyncio.run(run_controller(run_options(args)))


def run_options(args: argparse.Namespace) -> RunOptions:
    """The parsed ``run`` flags as the controller's options."""
    from predictive_scaler.runtime import RunOptions

    return RunOptions(
        config_file=args.config_file,
        config_map=args.config_map,
        kubeconfig=args.kubeconfig,
        context=args.context,
        prometheus_url=args.prometheus_url,
        dry_run=args.dry_run,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_bind_address,
        restore_on_exit=args.restore_on_exit,
        identity=args.identity,
        log_format=args.log_format,
        external_metrics_port=args.external_metrics_port,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        requestheader_client_ca_file=args.requestheader_client_ca_file,
        requestheader_allowed_names=args.requestheader_allowed_names,
        authentication_skip_lookup=args.authentication_skip_lookup,
        shard_index=args.shard_index,
        shard_count=args.shard_count,
        fit_workers=args.fit_workers,
        fit_timeout_seconds=args.fit_timeout,
    )


def run_recommend_command(args: argparse.Namespace) -> int:
    import asyncio

    from predictive_scaler.recommend import RecommendError, RecommendOptions, recommend

    options = RecommendOptions(
        config_file=args.config_file,
        config_map=args.config_map,
        kubeconfig=args.kubeconfig,
        context=args.context,
        prometheus_url=args.prometheus_url,
        output=args.output,
    )
    try:
        return asyncio.run(recommend(options, sys.stdout))
    except RecommendError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


# -- status ----------------------------------------------------------------------------


def _add_status(commands: Any) -> None:
    p = commands.add_parser(
        "status",
        help="every managed HPA's state, from its annotations (no Prometheus needed)",
        description=(
            "List the HPAs carrying predictive-scaler.io/* annotations: base, applied and "
            "recommended minReplicas, reason, model, data state and age of the last decision. "
            "Needs list on horizontalpodautoscalers (your kubeconfig, not the Pod's)."
        ),
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(handler=run_status_command)


def run_status_command(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import UTC, datetime

    from predictive_scaler.kube import KubeClient, load_api_client
    from predictive_scaler.status import (
        compute_rows,
        fetch_managed_hpas,
        format_json,
        format_table,
    )
    from predictive_scaler.values import KubeApiError

    async def read() -> list[Any]:
        api_client = await load_api_client(args.kubeconfig, args.context)
        try:
            return await fetch_managed_hpas(KubeClient(api_client), args.namespace)
        finally:
            await api_client.close()

    try:
        snapshots = asyncio.run(read())
    except KubeApiError as error:
        print(f"error: listing HPAs failed: {error}", file=sys.stderr)
        return 1
    rows = compute_rows(snapshots, datetime.now(UTC))
    sys.stdout.write(format_json(rows) if args.json else format_table(rows))
    return 0
