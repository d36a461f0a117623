"""The ConfigMap watch loop that never ends for good.

:meth:`~predictive_scaler.kube.KubeClient.watch_configmap` re-establishes dropped and expired
watches itself, but raises on 401/403: the adapter cannot know whether retrying helps. Here it
does: a projected service-account token rotates (401 until the client reads the new one), and
an RBAC change rolls out while the controller runs (403 until it lands). So every failure is
retried from a fresh list, backing off through a delay sequence (the last delay repeats; a
change seen resets it), and each restart is counted by reason for ``/metrics``. Meanwhile the
last good configuration stays in force: nothing here touches it.

A deleted ConfigMap is reported (``DELETED``) and followed: its re-creation arrives as
``ADDED`` on the same watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

from predictive_scaler.kube import KubeClient
from predictive_scaler.logs import get_logger
from predictive_scaler.ports import Sleeper
from predictive_scaler.values import ConfigMapEvent, KubeApiError

__all__ = ["CONFIG_WATCH_BACKOFF_SECONDS", "restart_reason", "watch_config_map"]

CONFIG_WATCH_BACKOFF_SECONDS: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Delays before starting a failed watch again (401/403, or the stream failing otherwise);
the last one repeats. A minute at most: a fixed RBAC or a rotated token is seen quickly."""

OnEvent = Callable[[ConfigMapEvent], Awaitable[None]]

log = get_logger()


class RestartCounter(Protocol):
    def count_config_watch_restart(self, reason: str) -> None: ...


def restart_reason(error: BaseException) -> str:
    """The ``reason`` label of a watch that failed with ``error``."""
    if isinstance(error, KubeApiError):
        return {401: "unauthorized", 403: "forbidden", 0: "disconnected"}.get(error.status, "error")
    return "internal"


async def watch_config_map(
    kube: KubeClient,
    namespace: str,
    name: str,
    on_event: OnEvent,
    *,
    metrics: RestartCounter,
    sleep: Sleeper = asyncio.sleep,
    backoff_seconds: Sequence[float] = CONFIG_WATCH_BACKOFF_SECONDS,
) -> None:
    """Feed every state of the ConfigMap to ``on_event`` until cancelled.

    ``on_event`` failing is logged and the watch goes on (the next change may be good); the
    watch failing backs off and starts again from a list, so the current state is fed again
    (``on_event`` sees the same data twice, and must take that as no change)."""
    failures = 0
    while True:
        try:
            async for event in kube.watch_configmap(
                namespace, name, sleep=sleep, on_restart=metrics.count_config_watch_restart
            ):
                failures = 0
                try:
                    await on_event(event)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("config_event_failed", configmap=f"{namespace}/{name}")
            reason, detail = "closed", "the watch ended"  # it never should; do not spin
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reason, detail = restart_reason(error), str(error)
        metrics.count_config_watch_restart(reason)
        failures += 1
        delay = backoff_seconds[min(failures, len(backoff_seconds)) - 1]
        log.warning(
            "config_watch_failed",
            configmap=f"{namespace}/{name}",
            reason=reason,
            error=detail,
            retry_in_seconds=delay,
            attempt=failures,
        )
        await sleep(delay)
