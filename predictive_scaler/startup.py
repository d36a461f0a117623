"""What ``predictive-scaler run``'s options mean: :class:`RunOptions`, the checks a process
makes before it starts, and the parts built from the options (identity, Lease, the External
Metrics API server). :func:`predictive_scaler.runtime.run_controller` wires them together."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

from predictive_scaler.config import Config, ConfigError, load_config_file
from predictive_scaler.controller import (
    CYCLE_IO_ALLOWANCE_SECONDS,
    DEFAULT_CONCURRENCY,
    Clock,
    Controller,
    Sleeper,
)
from predictive_scaler.delegated_auth import DelegatedAuth
from predictive_scaler.external_metrics import ExternalMetricsServer
from predictive_scaler.fit_runner import (
    DEFAULT_FIT_TIMEOUT_SECONDS,
    ProcessFitRunner,
    make_fit_runner,
)
from predictive_scaler.informer import HpaInformer
from predictive_scaler.kube import KubeClient
from predictive_scaler.leader import LeaderElector
from predictive_scaler.logs import LogFormat
from predictive_scaler.publish import HealthState
from predictive_scaler.settings import parse_config_map_ref, prometheus_settings
from predictive_scaler.sharding import Shard, lease_name_for
from predictive_scaler.values import ObjectRef

__all__ = [
    "RunOptions",
    "Start",
    "StartRefused",
    "controller_for",
    "external_metrics_server",
    "identity",
    "leader_elector",
    "prepare_start",
]


@dataclass(frozen=True)
class RunOptions:
    """``predictive-scaler run`` options."""

    config_file: str | None = None
    """A YAML file, reloaded when its mtime changes."""
    config_map: str | None = None
    """``NAMESPACE/NAME`` of a ConfigMap with key ``config.yaml``, watched."""
    kubeconfig: str | None = None
    context: str | None = None
    prometheus_url: str | None = None
    """Overrides ``prometheus.url`` of the configuration."""
    dry_run: bool = False
    """Decide and log, never patch; also keeps out of leader election."""
    metrics_port: int | None = None
    """Port of /metrics; ``None``: the configuration's ``controller.metricsPort``."""
    metrics_host: str = "0.0.0.0"
    restore_on_exit: bool = False
    """On SIGTERM/SIGINT, give every managed HPA its base minReplicas back."""
    identity: str | None = None
    """Leader-election identity; default env POD_NAME, else the host name."""
    log_format: LogFormat = "auto"
    config_poll_seconds: float = 5.0
    max_concurrency: int = DEFAULT_CONCURRENCY
    fit_workers: int = 0
    """Processes that fit models; 0 fits in a thread of this process."""
    fit_timeout_seconds: float = DEFAULT_FIT_TIMEOUT_SECONDS
    """Budget of one fit; a fit over it is abandoned (its worker process stopped)."""
    progressive_start: bool = True
    """A cheap model decides each target's first cycle, the configured one replaces it when
    its fit lands, and refits run beside the cycles (no cycle waits on a fit)."""
    shard_index: int = 0
    """This controller's shard, ``0 <= shard_index < shard_count``."""
    shard_count: int = 1
    """Controllers sharing the targets by a stable hash, each with its own Lease."""
    external_metrics_port: int | None = None
    """Serve the External Metrics API (HTTPS) on this port; ``None``: off."""
    tls_cert_file: str | None = None
    """PEM certificate (chain) of the External Metrics API server."""
    tls_key_file: str | None = None
    """PEM private key of that certificate."""
    requestheader_client_ca_file: str | None = None
    """CA of the front proxy's client certificate (the kube-aggregator's); ``None``: the
    ``requestheader-client-ca-file`` of ``kube-system/extension-apiserver-authentication``."""
    requestheader_allowed_names: tuple[str, ...] = ()
    """Common names that front-proxy certificate may have (with the flag's CA); empty: any."""
    authentication_skip_lookup: bool = False
    """Do not read ``extension-apiserver-authentication``: bearer tokens only, unless
    ``requestheader_client_ca_file`` is given."""


class StartRefused(Exception):
    """Options or a first configuration the process cannot start with (exit code 2): the
    ``event`` and ``fields`` of the one error line that says why."""

    def __init__(self, event: str, **fields: str) -> None:
        super().__init__(f"{event}: {fields}")
        self.event = event
        self.fields = fields


@dataclass(frozen=True)
class Start:
    """What the options resolve to before any I/O."""

    shard: Shard
    config_map: tuple[str, str] | None
    """``(namespace, name)`` of the watched ConfigMap; ``None`` with ``--config``."""
    initial: Config | None
    """The ``--config`` file's configuration, already validated; ``None`` with a ConfigMap."""


def prepare_start(options: RunOptions) -> Start:
    """Check the options and load a ``--config`` file; :class:`StartRefused` says why not."""
    if (options.config_file is None) == (options.config_map is None):
        raise StartRefused("options_invalid", error="give exactly one of --config and --config-map")
    if options.external_metrics_port is not None and not (
        options.tls_cert_file and options.tls_key_file
    ):
        raise StartRefused(
            "options_invalid",
            error="--external-metrics-port needs --tls-cert-file and --tls-key-file",
        )
    try:
        shard = Shard(options.shard_index, options.shard_count)
    except ValueError as error:
        raise StartRefused("options_invalid", error=str(error)) from error
    config_map = parse_config_map_ref(options.config_map) if options.config_map else None
    initial: Config | None = None
    if options.config_file is not None:
        try:
            initial = load_config_file(options.config_file)
        except ConfigError as error:
            raise StartRefused(
                "config_rejected", error=str(error), source=options.config_file
            ) from error
        if prometheus_settings(initial.prometheus, options.prometheus_url) is None:
            raise StartRefused(
                "config_rejected", error="prometheus.url missing and no --prometheus-url"
            )
    return Start(shard, config_map, initial)


def identity(options: RunOptions) -> str:
    """Leader-election identity and Events' ``reportingInstance``."""
    return options.identity or os.environ.get("POD_NAME") or socket.gethostname()


def _lease_namespace(config: Config, config_map: tuple[str, str] | None) -> str:
    return (
        config.controller.lease_namespace
        or os.environ.get("POD_NAMESPACE")
        or (config_map[0] if config_map else None)
        or "default"
    )


def controller_for(
    kube: KubeClient, options: RunOptions, start: Start, clock: Clock, sleeper: Sleeper
) -> Controller:
    """The controller the options describe: its fit runner (checked by ``/healthz`` when it
    is a process pool), an HPA informer and the cycle deadline of the fit budget."""
    health = HealthState()
    fit_runner = make_fit_runner(options.fit_workers, options.fit_timeout_seconds)
    if isinstance(fit_runner, ProcessFitRunner):
        health.add_check("fit_pool", fit_runner.problem)
    return Controller(
        kube,
        prometheus_url=options.prometheus_url,
        clock=clock,
        dry_run=options.dry_run,
        config_origin=ObjectRef("v1", "ConfigMap", *start.config_map) if start.config_map else None,
        health=health,
        max_concurrency=options.max_concurrency,
        fit_runner=fit_runner,
        shard=start.shard,
        hpa_informer=HpaInformer(kube, sleep=sleeper),
        cycle_deadline_seconds=options.fit_timeout_seconds + CYCLE_IO_ALLOWANCE_SECONDS,
        progressive_start=options.progressive_start,
    )


def leader_elector(
    kube: KubeClient, config: Config, start: Start, options: RunOptions, clock: Clock
) -> LeaderElector:
    """The elector of this shard's Lease, as the configuration's ``controller`` section says."""
    settings = config.controller
    return LeaderElector(
        kube,
        _lease_namespace(config, start.config_map),
        lease_name_for(settings.lease_name, start.shard),
        identity(options),
        lease_duration_seconds=math.ceil(settings.lease_duration_seconds),
        renew_period_seconds=settings.renew_period_seconds,
        clock=clock,
    )


def external_metrics_server(
    controller: Controller, kube: KubeClient, options: RunOptions
) -> ExternalMetricsServer:
    """The External Metrics API server of ``--external-metrics-port`` (not yet started)."""
    assert options.external_metrics_port is not None
    assert options.tls_cert_file is not None and options.tls_key_file is not None
    return ExternalMetricsServer(
        controller.metrics,
        options.tls_cert_file,
        options.tls_key_file,
        auth=DelegatedAuth(
            kube,
            client_ca_file=options.requestheader_client_ca_file,
            allowed_names=options.requestheader_allowed_names,
            skip_lookup=options.authentication_skip_lookup,
        ),
        host=options.metrics_host,
        port=options.external_metrics_port,
    )
