"""The composition root: :func:`run_controller` wires the :class:`Controller` to the real
world (API client, HPA informer, fit runner, configuration source, /metrics, the External
Metrics API, leader election, the background tasks), turns SIGTERM/SIGINT into a stop flag
and shuts down in order: tasks stop, then servers and clients close.

The parts live in their own modules (:mod:`~predictive_scaler.controller`,
:mod:`~predictive_scaler.startup`, :mod:`~predictive_scaler.tasks`,
:mod:`~predictive_scaler.fit_runner`); their public names are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from aiohttp import web

from predictive_scaler import startup, tasks
from predictive_scaler.controller import Clock, Controller, Sleeper
from predictive_scaler.external_metrics import ExternalMetricsServer, watch_certificate
from predictive_scaler.fit_runner import FitTimeoutError, ProcessFitRunner, ThreadFitRunner
from predictive_scaler.kube import KubeClient, load_api_client, utc_now
from predictive_scaler.logs import configure_logging, get_logger
from predictive_scaler.publish import bound_port, make_app, start_http_server
from predictive_scaler.startup import RunOptions, StartRefused, identity
from predictive_scaler.values import KubeApiError

__all__ = [
    "Controller",
    "FitTimeoutError",
    "ProcessFitRunner",
    "RunOptions",
    "ThreadFitRunner",
    "run_controller",
]

log = get_logger()


async def run_controller(
    options: RunOptions,
    *,
    clock: Clock = utc_now,
    sleeper: Sleeper = asyncio.sleep,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
    on_started: Callable[[Controller], None] | None = None,
) -> int:
    """Run the controller until SIGTERM/SIGINT (or ``stop``); returns the exit code:
    0 after a clean stop, 2 for a configuration the process cannot start with."""
    # The format the operator chose for this run wins over any earlier configuration.
    configure_logging(options.log_format, force=True)
    stop = stop or asyncio.Event()
    try:
        start = startup.prepare_start(options)
    except StartRefused as refused:
        log.error(refused.event, **refused.fields)
        return 2
    loop = asyncio.get_running_loop()
    installed = [signal.SIGTERM, signal.SIGINT] if install_signal_handlers else []
    for sig in installed:
        loop.add_signal_handler(sig, stop.set)

    api_client = await load_api_client(options.kubeconfig, options.context)
    kube = KubeClient(api_client, reporting_instance=identity(options))
    controller = startup.controller_for(kube, options, start, clock, sleeper)
    health, fit_runner = controller.health, controller.fit_runner
    supervisor = tasks.Supervisor()
    runner: web.AppRunner | None = None
    external: ExternalMetricsServer | None = None
    config_ready = asyncio.Event()
    try:
        if start.initial is not None:
            controller.apply_config(start.initial)
            config_ready.set()
            supervisor.spawn(
                "config-file", tasks.poll_config_file(controller, options, sleeper, stop)
            )
        else:
            assert start.config_map is not None
            supervisor.spawn(
                "config-watch",
                tasks.follow_config_map(controller, start.config_map, sleeper, config_ready),
            )
        # The loop needs a configuration before anything else.
        await tasks.wait_first(config_ready, stop)
        if stop.is_set():
            return 0
        assert controller.config is not None
        port = options.metrics_port
        if port is None:
            port = controller.config.controller.metrics_port
        runner = await start_http_server(
            make_app(controller.metrics, health), options.metrics_host, port
        )
        controller.metrics_port = bound_port(runner)
        if options.external_metrics_port is not None:
            external = startup.external_metrics_server(controller, kube, options)
            try:
                controller.external_metrics_port = await external.start()
            except OSError as error:  # unreadable certificate or key, port in use
                log.error("external_metrics_failed", error=str(error))
                return 2
            # Wall-clock file watching, not controller time: the real sleep, not `sleeper`.
            supervisor.spawn("certificate-reload", watch_certificate(external))
        if not options.dry_run:
            controller.elector = startup.leader_elector(
                kube, controller.config, start, options, clock
            )
            await controller.renew_leadership()
            supervisor.spawn("lease", tasks.renew_lease(controller, sleeper, stop))
        log.info(
            "controller_started",
            identity=identity(options),
            dry_run=options.dry_run,
            metrics_port=controller.metrics_port,
            external_metrics_port=controller.external_metrics_port,
            shard=f"{start.shard.index}/{start.shard.count}",
            targets=len(controller.reconcilers),
            fit_workers=options.fit_workers,
        )
        if on_started is not None:
            on_started(controller)
        await controller.serve(stop, sleeper)
        log.info("controller_stopping", restore_on_exit=options.restore_on_exit)
        await supervisor.stop()
        if options.restore_on_exit:
            if controller.elector is not None:
                await controller.renew_leadership()  # patch only while the lease is ours
            await controller.restore_all()
        if controller.elector is not None:
            with contextlib.suppress(KubeApiError):
                await controller.elector.release()
        return 0
    finally:
        await supervisor.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
        if runner is not None:
            await runner.cleanup()
        if external is not None:
            await external.close()
        await controller.aclose()
        await api_client.close()
        if isinstance(fit_runner, ProcessFitRunner):
            await asyncio.to_thread(fit_runner.close)
        log.info("controller_stopped")
