"""The chaos soak's mid-cycle hooks (tests/chaos/kube_hooks.py) under concurrent cycles: each
one-shot hook fires once, however many cycles reach its moment together."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client

from predictive_scaler.kube import HpaSnapshot, KubeClient
from tests.chaos import HookedKube
from tests.kube_double import KubeDouble, make_hpa


async def test_one_shot_hooks_fire_once_each_when_two_cycles_reach_them_together(
    kube_server: KubeDouble, kube_api: client.ApiClient
) -> None:
    for namespace in ("a", "b"):
        kube_server.put_object(make_hpa(namespace, "nim", 1, 10))
    hooked = HookedKube(KubeClient(kube_api))
    fired: list[str] = []

    async def slow_hook(snapshot: HpaSnapshot) -> None:
        fired.append(snapshot.namespace)
        await asyncio.sleep(0.05)  # the other cycle reaches the hook meanwhile

    hooked.after_read(slow_hook)
    hooked.after_read(slow_hook)  # two armed: one cycle is still in the first, the other
    reads = await asyncio.wait_for(
        asyncio.gather(hooked.read_hpa("a", "nim"), hooked.read_hpa("b", "nim")), 10
    )
    assert [r.namespace for r in reads] == ["a", "b"]
    assert sorted(fired) == ["a", "b"], fired  # each hook fired once, by one of the cycles
