"""The controller: watches feed keys into the work queue, whose workers reconcile them.

Layers (kopf's seams): :mod:`watching` lists and watches, :mod:`workqueue` de-duplicates keys
and runs the workers, :mod:`reconcile` carries out one reconcile, deciding nothing itself
(:mod:`builders` decide the objects, :mod:`conditions` the status); :mod:`kubeclient` and
:mod:`queues` do the I/O. Work is keyed by namespace/name, so a burst of events for one resource
costs one reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .builders import ACTOR_LABEL, MANAGED_BY
from .finalizers import FINALIZER
from .kubeclient import KubeClient, KubeError
from .model import KIND
from .queues import QueueManager
from .reconcile import API_VERSION, Reconciler, now
from .watching import objects
from .workqueue import WorkQueue

__all__ = ["API_ERROR_DELAY", "FINALIZER", "Controller"]

log = logging.getLogger("asya_operator")

API_ERROR_DELAY = 5.0
"""Seconds before a reconcile that met a temporary API error (5xx, 429) runs again."""
_WORKLOADS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "Job"))


class Controller:
    def __init__(
        self,
        kube: KubeClient,
        queues: QueueManager,
        *,
        namespaces: tuple[str, ...] = (),
        resync: float = 300.0,
        workers: int = 4,
        clock: Callable[[], str] = now,
    ) -> None:
        self.kube = kube
        self.queues = queues
        self.namespaces = namespaces
        self.resync = resync
        self.reconciler = Reconciler(kube, queues, clock=clock)
        self.work = WorkQueue(self._reconcile_key, workers=workers)

    @property
    def idle(self) -> asyncio.Event:
        """Set while no reconcile is queued or running."""
        return self.work.idle

    @property
    def reconciles(self) -> int:
        return self.reconciler.reconciles

    def enqueue(self, namespace: str, name: str) -> None:
        self.work.add(namespace, name)

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """One reconcile of one Asya, now (see :meth:`Reconciler.reconcile`)."""
        return await self.reconciler.reconcile(namespace, name)

    async def _reconcile_key(self, namespace: str, name: str) -> float | None:
        try:
            return await self.reconciler.reconcile(namespace, name)
        except KubeError as exc:
            log.warning("reconcile %s/%s: API error (%s); retrying", namespace, name, exc)
            return API_ERROR_DELAY

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self.work.run(), name="workers")]
            for namespace in self.namespaces or (None,):
                tasks.append(
                    tg.create_task(self._watch_asyas(namespace), name=f"watch-{namespace}")
                )
                for api_version, kind in _WORKLOADS:
                    tasks.append(
                        tg.create_task(
                            self._watch_owned(api_version, kind, namespace),
                            name=f"owned-{kind}-{namespace}",
                        )
                    )
            tasks.append(tg.create_task(self._resync(), name="resync"))
            await stop.wait()
            for task in tasks:
                task.cancel()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            for namespace in self.namespaces or (None,):
                with contextlib.suppress(KubeError):
                    listing = await self.kube.list_objects(API_VERSION, KIND, namespace)
                    for item in listing.get("items") or []:
                        self.enqueue(item["metadata"]["namespace"], item["metadata"]["name"])

    async def _watch_asyas(self, namespace: str | None) -> None:
        async for obj in objects(self.kube, API_VERSION, KIND, namespace):
            meta = obj.get("metadata") or {}
            self.enqueue(meta["namespace"], meta["name"])

    async def _watch_owned(self, api_version: str, kind: str, namespace: str | None) -> None:
        """Owned workloads changing (replicas becoming ready) update the owner's status."""
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        async for obj in objects(self.kube, api_version, kind, namespace, label_selector=selector):
            meta = obj.get("metadata") or {}
            actor = (meta.get("labels") or {}).get(ACTOR_LABEL)
            if actor:
                self.enqueue(meta["namespace"], actor)
