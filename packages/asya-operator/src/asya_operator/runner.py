"""``asya-operator run`` once the API client exists: probes, the lease, then the controller.

The probe server starts first, so a replica waiting for the Lease already answers: it is ready
while the API server answers its lease attempts (a standby is healthy, and a rollout can go on),
not ready while they fail. The leader is ready once every watch has listed and is watching.
Nothing ends the process but a signal or the lease lost (exit 1); a failing API server fails
/readyz at once and /healthz after ``ASYA_OPERATOR_UNHEALTHY_AFTER``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .controller import Controller
from .health import Check, Health
from .kubeclient import KubeClient
from .leader import LeaderElector
from .metrics import OperatorMetrics
from .probes import ProbeServer
from .queues import QueueManager
from .settings import OperatorSettings
from .supervise import supervise

__all__ = ["Operator"]

log = logging.getLogger("asya_operator")


class Operator:
    """One replica: :meth:`run` until ``stop`` is set; :attr:`health` is what the probes say."""

    def __init__(self, settings: OperatorSettings, api: Any) -> None:
        self.settings = settings
        self.health = Health(unhealthy_after=settings.unhealthy_after)
        self.kube = KubeClient(api)
        self.queues = QueueManager(settings.rabbitmq_url)
        self.elector = LeaderElector(
            self.kube,
            settings.namespace,
            settings.identity,
            duration=settings.lease_duration,
            check=self.health.check("lease") if settings.leader_election else Check("lease"),
        )
        self.metrics = OperatorMetrics()
        self.probes = ProbeServer(self.health, self.metrics)
        self.listening = asyncio.Event()
        """Set once the probe server listens (its port in ``probes.port``), or is off."""
        self.lost = False
        self.controller = Controller(
            self.kube,
            self.queues,
            namespaces=settings.watch_namespaces,
            resync=settings.resync,
            workers=settings.workers,
            health=self.health,
            metrics=self.metrics,
        )

    async def run(self, stop: asyncio.Event) -> int:
        """0 when stopped, 1 when the lease was lost."""
        held = False
        try:
            if self.settings.http_port is not None:
                await self.probes.start(self.settings.http_host, self.settings.http_port)
            self.listening.set()
            if self.settings.leader_election:
                if not await self._wait_for_lease(stop):
                    return 0
                held = True
            await self._reconcile(stop)
            return 1 if self.lost else 0
        finally:
            await self.probes.stop()
            await self.queues.close()
            if held:  # stopped while waiting for the lease: there is nothing to give up
                await self.elector.release()

    async def _wait_for_lease(self, stop: asyncio.Event) -> bool:
        """True once we hold the lease, False if stopped first."""
        elector = self.elector
        log.info(
            "%s waiting for the lease %s/%s", elector.identity, elector.namespace, elector.name
        )
        async with asyncio.TaskGroup() as tg:
            waiter = tg.create_task(self.elector.acquire(), name="lease-acquire")
            stopper = tg.create_task(stop.wait(), name="stop")
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
        return not stop.is_set()

    async def _reconcile(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            holder = None
            if self.settings.leader_election:
                keep = supervise(self.elector.check, lambda: self._keep_lease(stop), reports=True)
                holder = tg.create_task(keep, name="lease")
            log.info(
                "reconciling Asya resources in %s",
                ", ".join(self.settings.watch_namespaces) or "all namespaces",
            )
            await self.controller.run(stop)
            if holder is not None:
                holder.cancel()

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        await self.elector.hold()  # returns when the lease is lost
        self.lost = True
        stop.set()
        await asyncio.Future()  # stopping: cancelled with the rest once the controller ends
