"""One reconcile: an Asya in, its objects applied, its queue declared, its status written.

What to apply is :mod:`builders`' decision and what the status says is :mod:`conditions`';
this module carries them out in order. It is idempotent (server-side apply, the status written
only when it differs), so running it again for no reason costs reads and no-op applies only.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from .builders import KEDA_JOB_LABEL, Actor, desired_objects
from .conditions import (
    Cond,
    Observed,
    Replicas,
    desired_status,
    jobs_state,
    ready_condition,
    replicas_state,
    scaling_condition,
    status_body,
    unchanged,
)
from .events import event_body, noteworthy
from .finalizers import finalizer_patch, finalizers_with
from .kubeclient import TEMPORARY, KubeClient, KubeError, NotFound
from .model import GROUP, KIND, VERSION, WorkloadKind
from .queues import BrokerUnavailable, QueueManager

__all__ = ["APPLY_RETRY", "BROKER_RETRY", "REPLICAS_MANAGER", "Reconciler", "retry_after"]

log = logging.getLogger("asya_operator")

API_VERSION = f"{GROUP}/{VERSION}"
REPLICAS_MANAGER = "asya-operator-replicas"
"""The field manager that owns an autoscaled workload's spec.replicas once it exists."""
BROKER_RETRY = 15.0
APPLY_RETRY = 30.0
# Kind -> apiVersion of what the operator may have applied (and so may prune).
_KINDS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "Service": "v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "ScaledJob": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Applied:
    """The outcome of applying an actor's objects."""

    workload: Cond
    replicas: Replicas
    managed: tuple[str, ...]


def retry_after(workload: Cond, queue: Cond) -> float | None:
    """Seconds until a reconcile whose apply or queue declaration failed runs again."""
    delays = []
    if workload.reason == "ApplyFailed":
        delays.append(APPLY_RETRY)
    if queue.reason == "BrokerUnavailable":
        delays.append(BROKER_RETRY)
    return min(delays, default=None)


def _managed(obj: dict[str, Any]) -> list[str]:
    return list((obj.get("status") or {}).get("managedObjects") or [])


class Reconciler:
    def __init__(
        self, kube: KubeClient, queues: QueueManager, *, clock: Callable[[], str] = now
    ) -> None:
        self.kube = kube
        self.queues = queues
        self.clock = clock
        self.reconciles = 0

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one Asya to its desired state. Returns seconds until it should run again
        (a temporary failure), or None."""
        self.reconciles += 1
        try:
            obj = await self.kube.get(API_VERSION, KIND, namespace, name)
        except NotFound:
            return None
        if obj["metadata"].get("deletionTimestamp"):
            return await self._finalize(obj)
        try:
            actor = Actor.from_resource(obj)
        except msgspec.ValidationError as exc:
            await self._write_status(obj, [Cond("Ready", False, "InvalidSpec", str(exc))], None)
            return None
        await self._sync_finalizer(obj, actor.spec.delete_queue_on_delete)
        applied = await self._apply(obj, actor)
        queue, depth = await self._declare(actor)
        parts = [applied.workload, scaling_condition(actor.spec.scaling, applied.workload), queue]
        observed = Observed(
            queue=actor.queue,
            managed_objects=applied.managed,
            queue_depth=depth,
            replicas=applied.replicas,
        )
        await self._write_status(obj, [ready_condition(parts), *parts], observed)
        return retry_after(applied.workload, queue)

    async def _apply(self, obj: dict[str, Any], actor: Actor) -> Applied:
        """Apply every desired object and prune the ones no longer desired; an object the API
        server refuses becomes ``ApplyFailed`` (temporary errors propagate: retried)."""
        before = set(_managed(obj))
        applied: dict[str, dict[str, Any]] = {}
        managed: list[str] = []
        try:
            for desired in desired_objects(actor):
                key = f"{desired['kind']}/{desired['metadata']['name']}"
                created = None if key in before else await self._create_at_min(actor, desired)
                applied[desired["kind"]] = created or await self.kube.apply(desired)
                managed.append(key)
            workload, replicas = await self._workload_state(actor, applied)
            await self._prune(obj, managed)
        except TEMPORARY:
            raise
        except KubeError as exc:
            failed = Cond("WorkloadReady", False, "ApplyFailed", exc.message)
            return Applied(failed, Replicas(), tuple(_managed(obj)))
        return Applied(workload, replicas, tuple(managed))

    async def _declare(self, actor: Actor) -> tuple[Cond, int | None]:
        """``QueueReady`` and the queue's depth."""
        t = actor.spec.transport
        try:
            depth = await self.queues.ensure(t.exchange, actor.queue, (t.happy_end, t.error_end))
        except BrokerUnavailable as exc:
            return Cond("QueueReady", False, "BrokerUnavailable", str(exc)), None
        message = f"{actor.queue!r} bound on {t.exchange!r}"
        return Cond("QueueReady", True, "Declared", message), depth

    async def _workload_state(
        self, actor: Actor, applied: dict[str, dict[str, Any]]
    ) -> tuple[Cond, Replicas]:
        """``WorkloadReady`` and the replica counts, from the live workload (for a ScaledJob, the
        Jobs KEDA started for it)."""
        spec = actor.spec
        kind = spec.workload.kind
        if kind is WorkloadKind.JOB:
            scaled = spec.scaling.enabled
            if scaled:
                listed = await self.kube.list_objects(
                    "batch/v1", "Job", actor.namespace,
                    label_selector=f"{KEDA_JOB_LABEL}={actor.name}",
                )  # fmt: skip
                jobs = list(listed.get("items") or [])
            else:
                jobs = [applied["Job"]] if "Job" in applied else []
            return jobs_state(jobs, scaled=scaled, parallelism=spec.workload.replicas)
        want = spec.scaling.min_replicas if spec.scaling.enabled else spec.workload.replicas
        return replicas_state(applied.get(kind.value, {}).get("status") or {}, want)

    async def _create_at_min(self, actor: Actor, desired: dict[str, Any]) -> dict[str, Any] | None:
        """Create an autoscaled Deployment or StatefulSet at ``minReplicas``, then leave the count
        to the HPA. Returns the applied workload, or None when there was nothing to create.

        The operator's own applies omit ``spec.replicas`` when KEDA scales, so the API server would
        default a new workload to 1 and start a pod before KEDA's first poll, even at
        ``minReplicas: 0``. Instead the first apply carries ``replicas: minReplicas``, and a second
        field manager that owns nothing else takes ``spec.replicas`` over (server-side apply's
        documented hand-over). The operator's later applies without the field leave it alone;
        the HPA changes it through the scale subresource.
        """
        if not actor.spec.scaling.enabled or desired["kind"] not in ("Deployment", "StatefulSet"):
            return None
        meta = desired["metadata"]
        try:
            await self.kube.get(
                desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"]
            )
            return None
        except NotFound:
            pass
        replicas = actor.spec.scaling.min_replicas
        await self.kube.apply({**desired, "spec": {**desired["spec"], "replicas": replicas}})
        await self.kube.apply(
            {
                "apiVersion": desired["apiVersion"],
                "kind": desired["kind"],
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"replicas": replicas},
            },
            field_manager=REPLICAS_MANAGER,
        )
        return await self.kube.apply(desired)  # the operator lets go of spec.replicas

    async def _prune(self, obj: dict[str, Any], managed: list[str]) -> None:
        """Delete what an earlier spec needed and this one does not (e.g. a kind change)."""
        meta = obj["metadata"]
        for key in _managed(obj):
            kind, _, name = key.partition("/")
            if key in managed or kind not in _KINDS:
                continue
            try:
                await self.kube.delete(_KINDS[kind], kind, meta["namespace"], name)
                log.info("%s/%s: deleted %s no longer needed", meta["namespace"], meta["name"], key)
            except NotFound:
                pass

    async def _sync_finalizer(self, obj: dict[str, Any], wanted: bool) -> None:
        meta = obj["metadata"]
        finalizers = finalizers_with(meta, wanted)
        if finalizers is None:
            return
        patched = await self.kube.merge_patch(
            API_VERSION, KIND, meta["namespace"], meta["name"], finalizer_patch(meta, finalizers)
        )
        meta["finalizers"] = finalizers
        meta["resourceVersion"] = patched["metadata"]["resourceVersion"]

    async def _finalize(self, obj: dict[str, Any]) -> float | None:
        meta = obj["metadata"]
        finalizers = finalizers_with(meta, False)
        if finalizers is None:
            return None
        spec = obj.get("spec") or {}
        queue = spec.get("queue") or meta["name"]
        if spec.get("deleteQueueOnDelete"):
            try:
                await self.queues.delete(queue)
                await self._event(obj, "Normal", "QueueDeleted", f"deleted queue {queue!r}")
            except BrokerUnavailable as exc:
                await self._event(
                    obj, "Warning", "BrokerUnavailable", f"cannot delete queue: {exc}"
                )
                return BROKER_RETRY
        try:
            await self.kube.merge_patch(
                API_VERSION,
                KIND,
                meta["namespace"],
                meta["name"],
                finalizer_patch(meta, finalizers),
            )
        except KubeError as exc:  # NotFound/Conflict: gone already, or retried on the next event
            log.debug("%s/%s: finalizer not removed: %s", meta["namespace"], meta["name"], exc)
        return None

    async def _write_status(
        self, obj: dict[str, Any], wanted: list[Cond], observed: Observed | None
    ) -> None:
        meta = obj["metadata"]
        current = obj.get("status") or {}
        status = desired_status(
            current,
            wanted,
            generation=int(meta.get("generation") or 0),
            now=self.clock(),
            observed=observed,
        )
        body = status_body(status)
        if unchanged(current, body):
            return  # nothing changed: no write
        await self.kube.merge_patch(
            API_VERSION, KIND, meta["namespace"], meta["name"], {"status": body},
            subresource="status",
        )  # fmt: skip
        for cond in noteworthy(current.get("conditions") or [], wanted):
            kind = "Normal" if cond.ok else "Warning"
            await self._event(obj, kind, cond.reason, f"{cond.type}={cond.status}: {cond.message}")

    async def _event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        try:
            await self.kube.create(event_body(obj, kind, reason, message, now=self.clock()))
        except KubeError as exc:  # events are best effort; the status carries the truth
            meta = obj["metadata"]
            log.warning(
                "event %s for %s/%s not recorded: %s", reason, meta["namespace"], meta["name"], exc
            )
