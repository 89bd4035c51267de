"""Leader election with a coordination.k8s.io Lease, so two operator replicas never both act.

The holder renews the lease every third of its duration. Another replica takes it over only once
``renewTime + leaseDurationSeconds`` has passed; writes use the lease's resourceVersion, so two
candidates cannot both win a takeover. Both loops report to a :class:`~.health.Check`: it passes
while the API server answers (holding the lease or not: a replica waiting for it is healthy) and
fails with the error while it does not; errors are retried, never the end of the process.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from asya_protocol import Backoff

from .health import Check
from .kubeclient import Conflict, KubeClient, KubeError, NotFound

__all__ = ["LeaderElector"]

log = logging.getLogger("asya_operator.leader")
LEASE = "coordination.k8s.io/v1"


def _micro(ts: datetime.datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(raw: str) -> datetime.datetime:
    return datetime.datetime.strptime(raw.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


@dataclass
class LeaderElector:
    kube: KubeClient
    namespace: str
    identity: str
    _: KW_ONLY
    name: str = "asya-operator"
    duration: int = 15
    """Seconds the lease holds without a renewal; renewed every third of it."""
    check: Check = field(default_factory=lambda: Check("lease"))
    renewed: float | None = None
    """Loop time of the last successful take or renewal (kept across a restarted :meth:`hold`)."""

    def _lease(self, *, transitions: int, acquired: str, rv: str | None) -> dict[str, Any]:
        now = _micro(datetime.datetime.now(datetime.UTC))
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if rv:
            meta["resourceVersion"] = rv
        return {
            "apiVersion": LEASE,
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.duration,
                "acquireTime": acquired,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    async def try_acquire(self) -> bool:
        """One attempt to take or renew the lease. True when we hold it."""
        now = datetime.datetime.now(datetime.UTC)
        try:
            current = await self.kube.get(LEASE, "Lease", self.namespace, self.name)
        except NotFound:
            try:
                await self.kube.create(self._lease(transitions=0, acquired=_micro(now), rv=None))
            except Conflict:
                return False  # someone else created it first
            return True
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = spec.get("renewTime")
        duration = int(spec.get("leaseDurationSeconds") or self.duration)
        expired = renewed is None or _parse(renewed) + datetime.timedelta(seconds=duration) < now
        if holder != self.identity and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquired = spec.get("acquireTime") if holder == self.identity else _micro(now)
        try:
            await self.kube.replace(
                self._lease(
                    transitions=transitions,
                    acquired=acquired or _micro(now),
                    rv=current["metadata"]["resourceVersion"],
                )
            )
        except Conflict:
            return False  # lost a race: another replica wrote first
        if holder != self.identity:
            log.info("%s acquired the lease (was %s)", self.identity, holder or "nobody")
        return True

    async def _attempt(self) -> bool | None:
        """:meth:`try_acquire`, reporting to the check; None when the API server failed."""
        try:
            held = await self.try_acquire()
        except KubeError as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            self.check.failed(exc)
            return None
        self.check.passed()
        if held:
            self.renewed = asyncio.get_running_loop().time()
        return held

    async def acquire(self) -> None:
        """Wait until we hold the lease; API errors are retried after the shared backoff."""
        backoff = Backoff()
        while not (held := await self._attempt()):
            if held is None:
                await backoff.sleep()
            else:
                backoff.reset()
                await asyncio.sleep(self.duration / 3)

    async def hold(self) -> None:
        """Renew until renewal fails for a whole lease duration; then return (leadership lost)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.duration / 3)
            held = await self._attempt()
            if held is False:
                log.warning("%s lost the lease to another replica", self.identity)
                return
            if held is None and loop.time() - (self.renewed or 0.0) > self.duration:
                log.warning("%s could not renew the lease for %ss", self.identity, self.duration)
                return

    async def release(self) -> None:
        """Give the lease up at shutdown so another replica takes over at once."""
        try:
            current = await self.kube.get(LEASE, "Lease", self.namespace, self.name)
            if (current.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            current["spec"]["renewTime"] = _micro(
                datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
            )
            current["spec"]["holderIdentity"] = ""
            await self.kube.replace(current)
        except KubeError as exc:
            log.warning("releasing the lease failed: %s", exc)
