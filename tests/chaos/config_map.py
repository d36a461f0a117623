"""The soak's configuration as a ConfigMap in the API double, followed by the controller's
real ConfigMap watch (``tasks.follow_config_map`` over ``config_watch.watch_config_map``
and ``KubeClient.watch_configmap``), and the watch faults: 401 and 410 on the re-list after
a dropped watch, and the ConfigMap deleted and created again.

Every change the soak makes is written to the ConfigMap and then awaited on the controller's
own ``config_reloads_total{result}`` counter (real time, bounded): a change that is never
taken means the watch died, which the soak records as a violation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from predictive_scaler.controller import Controller
from predictive_scaler.kube import ObjectRef
from predictive_scaler.tasks import follow_config_map
from tests.kube_double import KubeDouble, make_configmap

NAMESPACE, NAME = "ops", "predictive-scaler"
ORIGIN = ObjectRef("v1", "ConfigMap", NAMESPACE, NAME)
WAIT_SECONDS = 20.0


def counter(controller: Controller, family: Any, **labels: str) -> float:
    """A counter's value from the controller's own metrics (``*_total`` sample)."""
    for metric in family.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                return float(sample.value)
    return 0.0


def reloads(controller: Controller, result: str) -> float:
    return counter(controller, controller.metrics.config_reloads, result=result)


class ConfigMapFeed:
    """Writes the soak's configuration and runs one controller's watch of it."""

    def __init__(self, server: KubeDouble) -> None:
        self.server = server
        self.task: asyncio.Task[None] | None = None
        self.controller: Controller | None = None
        self.revision = 0
        self.text: str | None = None
        """What the ConfigMap holds (None: it does not exist)."""

    def write(self, text: str) -> None:
        self.server.put_object(make_configmap(NAMESPACE, NAME, {"config.yaml": text}))
        self.text = text

    async def follow(self, controller: Controller) -> bool:
        """Start ``controller``'s watch (stopping any other) and wait for its first event to
        be taken or rejected; False when it never came."""
        await self.stop()
        self.controller = controller
        seen = reloads(controller, "applied") + reloads(controller, "rejected")

        async def no_wait(_seconds: float) -> None:
            await asyncio.sleep(0)  # the backoff in fake time: the soak's rounds are its clock

        ready = asyncio.Event()
        self.task = asyncio.create_task(
            follow_config_map(controller, (NAMESPACE, NAME), no_wait, ready),
            name="soak-config-watch",
        )
        return await self._until(
            lambda: reloads(controller, "applied") + reloads(controller, "rejected") > seen
        )

    async def change(self, text: str, *, result: str) -> bool:
        """Write ``text`` and wait until the controller counted it as ``result``."""
        assert self.controller is not None
        if text == self.text:
            return True  # the same data: the watch rightly sees no change
        seen = reloads(self.controller, result)
        self.write(text)
        controller = self.controller
        return await self._until(lambda: reloads(controller, result) > seen)

    async def touch(self, text: str) -> bool:
        """Write ``text`` with a new revision comment: proves the watch still takes changes."""
        self.revision += 1
        return await self.change(f"{text}# revision {self.revision}\n", result="applied")

    async def delete(self) -> bool:
        """Delete the ConfigMap; wait for the controller's rejection (``does not exist``)."""
        assert self.controller is not None
        controller = self.controller
        seen = reloads(controller, "rejected")
        self.server.delete_object("v1", "ConfigMap", NAMESPACE, NAME)
        self.text = None
        return await self._until(lambda: reloads(controller, "rejected") > seen)

    def refuse_relist(self, status: int) -> None:
        """The next two lists of the ConfigMap get ``status`` (401: a rotated token), and the
        open watch is dropped so the client lists again."""
        self.server.fail_next("GET", rf"/namespaces/{NAMESPACE}/configmaps$", status, times=2)
        self.server.drop_watches()

    def expire_watch(self) -> None:
        """Compact the double's history and drop the watch: the re-watch from the old
        resourceVersion gets 410 Gone."""
        self.server.put_object(make_configmap(NAMESPACE, "unrelated", {"n": str(self.revision)}))
        self.server.compact()
        self.server.drop_watches()

    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        if self.task is not None:
            task, self.task = self.task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)

    async def _until(self, predicate: Callable[[], bool]) -> bool:
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                while not predicate():
                    if self.task is not None and self.task.done():
                        return False
                    await asyncio.sleep(0.002)
        except TimeoutError:
            return False
        return True
