"""The controller: watches feed keys into the work queue, whose workers reconcile them.

Layers (kopf's seams): :mod:`watching` lists and watches, :mod:`workqueue` de-duplicates keys
and runs the workers, :mod:`reconcile` carries out one reconcile, deciding nothing itself
(:mod:`builders` decide the objects, :mod:`conditions` the status); :mod:`kubeclient` and
:mod:`queues` do the I/O. Work is keyed by namespace/name, so a burst of events for one resource
costs one reconcile. Every long-lived task (each watch, the workers, the resync timer) runs under
:func:`~.supervise.supervise` and owns a check in :attr:`Controller.health`, which the probes
report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from .builders import ACTOR_LABEL, MANAGED_BY
from .finalizers import FINALIZER
from .health import Check, Health
from .kubeclient import KubeClient, KubeError, resource_path
from .metrics import OperatorMetrics
from .model import KIND
from .queues import QueueManager
from .reconcile import API_VERSION, Reconciler, now
from .supervise import supervise
from .watching import objects
from .workqueue import ERROR_DELAY, WorkQueue

__all__ = ["API_ERROR_DELAY", "FINALIZER", "Controller"]

log = logging.getLogger("asya_operator")

API_ERROR_DELAY = 5.0
"""Seconds before a reconcile that met a temporary API error (5xx, 429) runs again."""
_WORKLOADS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "Job"))


def watch_name(api_version: str, kind: str, namespace: str | None) -> str:
    """A watch's check name: its resource, after its namespace (``asyas``, ``team-a/asyas``)."""
    plural = resource_path(api_version, kind, None).rsplit("/", 1)[-1]
    return f"{namespace}/{plural}" if namespace else plural


def _retry_after_error(key: tuple[str, str], exc: Exception) -> float:
    """A reconcile that raised: an API error is retried soon with one line in the log; anything
    else is a bug, logged with its traceback and retried later (:data:`ERROR_DELAY`)."""
    if isinstance(exc, KubeError):
        log.warning("reconcile %s/%s: API error (%s); retrying", *key, exc)
        return API_ERROR_DELAY
    log.error("reconcile %s/%s failed; retrying", *key, exc_info=exc)
    return ERROR_DELAY


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
        health: Health | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.queues = queues
        self.namespaces = namespaces
        self.resync = resync
        self.reconciler = Reconciler(kube, queues, clock=clock)
        self.work = WorkQueue(
            self.reconciler.reconcile, workers=workers, metrics=metrics, on_error=_retry_after_error
        )
        self.health = health or Health()

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

    async def run(self, stop: asyncio.Event) -> None:
        """Run every task, each supervised, until ``stop`` is set."""
        async with asyncio.TaskGroup() as tg:
            tasks = [self._supervised(tg, "workers", self.work.run)]
            for namespace in self.namespaces or (None,):
                for api_version, kind in ((API_VERSION, KIND), *_WORKLOADS):
                    name = watch_name(api_version, kind, namespace)
                    check = self.health.check(name)
                    watch = partial(self._watch, api_version, kind, namespace, check)
                    tasks.append(self._supervised(tg, name, watch, reports=True))
            tasks.append(self._supervised(tg, "resync", self._resync))
            await stop.wait()
            for task in tasks:
                task.cancel()

    def _supervised(
        self,
        tg: asyncio.TaskGroup,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        reports: bool = False,
    ) -> asyncio.Task[None]:
        check = self.health.check(name)
        return tg.create_task(supervise(check, run, reports=reports), name=name)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            for namespace in self.namespaces or (None,):
                try:
                    listing = await self.kube.list_objects(API_VERSION, KIND, namespace)
                except KubeError as exc:  # the watches report it; the next resync retries
                    log.warning("resync of %s failed: %s", namespace or "all namespaces", exc)
                    continue
                for item in listing.get("items") or []:
                    self.enqueue(item["metadata"]["namespace"], item["metadata"]["name"])

    async def _watch(
        self, api_version: str, kind: str, namespace: str | None, check: Check
    ) -> None:
        """Asyas changing are reconciled; owned workloads changing (replicas becoming ready)
        update their owner's status."""
        owned = kind != KIND
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items()) if owned else ""
        async for obj in objects(
            self.kube, api_version, kind, namespace, label_selector=selector, check=check
        ):
            meta = obj.get("metadata") or {}
            name = (meta.get("labels") or {}).get(ACTOR_LABEL) if owned else meta["name"]
            if name:
                self.enqueue(meta["namespace"], name)
