"""Leader election on a real Lease: one holder at a time, takeover on release or expiry."""

from __future__ import annotations

import asyncio
from typing import Any

from asya_operator.kubeclient import KubeClient
from asya_operator.leader import LeaderElector


async def test_one_leader_at_a_time(kube_api: Any, kube_namespace: str) -> None:
    kube = KubeClient(kube_api)
    a = LeaderElector(kube, kube_namespace, "op-a", duration=2)
    b = LeaderElector(kube, kube_namespace, "op-b", duration=2)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    assert await a.try_acquire()  # renewing is fine
    await a.release()
    assert await b.try_acquire()
    assert not await a.try_acquire()
    lease = await kube.get("coordination.k8s.io/v1", "Lease", kube_namespace, "asya-operator")
    assert lease["spec"]["holderIdentity"] == "op-b"
    assert lease["spec"]["leaseTransitions"] >= 1


async def test_takeover_after_expiry(kube_api: Any, kube_namespace: str) -> None:
    kube = KubeClient(kube_api)
    a = LeaderElector(kube, kube_namespace, "op-a", duration=1)
    b = LeaderElector(kube, kube_namespace, "op-b", duration=1)
    assert await a.try_acquire()
    # a stops renewing (a crashed pod): b gets it once the lease has run out.
    async with asyncio.timeout(10):
        await b.acquire()
    assert not await a.try_acquire()
