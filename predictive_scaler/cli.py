"""The command line: the parser of every subcommand, and the small commands (validate-config,
config-schema, run, recommend, status). The backtest's flags and body are in
``cli_backtest``, the argument types in ``cli_args``.

Each subcommand is a function taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predictive_scaler.cli_args import (
    name_list_arg,
    non_negative_int_arg,
    positive_float_arg,
    positive_int_arg,
)
from predictive_scaler.cli_backtest import add_backtest
from predictive_scaler.config import ConfigError, load_config_file

if TYPE_CHECKING:
    from predictive_scaler.runtime import RunOptions

Handler = Callable[[argparse.Namespace], int]


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
    add_backtest(commands)
    _add_validate_config(commands)
    _add_config_schema(commands)
    _add_cluster_commands(commands)
    _add_status(commands)
    return parser


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
    from predictive_scaler.config.json_schema import config_schema

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
        type=name_list_arg,
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
        type=non_negative_int_arg,
        default=0,
        metavar="I",
        help="this controller's shard, 0 <= I < --shard-count (default 0)",
    )
    run.add_argument(
        "--shard-count",
        type=positive_int_arg,
        default=1,
        metavar="N",
        help="controllers sharing the targets by a stable hash of namespace/name, each with its "
        "own Lease <leaseName>-shard-I-of-N (default 1: all targets, the plain Lease)",
    )
    run.add_argument(
        "--fit-workers",
        type=non_negative_int_arg,
        default=0,
        metavar="N",
        help="fit models in N worker processes (default 0: a thread of the controller)",
    )
    run.add_argument(
        "--fit-timeout",
        type=positive_float_arg,
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
