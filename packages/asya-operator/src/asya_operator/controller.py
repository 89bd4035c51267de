"""The reconcile loop: watch ``Asya`` resources (and the workloads they own), apply what the
builders say, keep the queue declared, and report status.

Layers: :mod:`builders` decide the objects, :mod:`conditions` the status, :mod:`kubeclient` and
:mod:`queues` do I/O; this module only sequences them. Reconciles are idempotent (server-side
apply, status written only when it changes) and keyed by namespace/name, so a burst of events
for one resource costs one reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from kubernetes_asyncio import watch
from kubernetes_asyncio.client import AppsV1Api, BatchV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from .builders import ACTOR_LABEL, KEDA_JOB_LABEL, MANAGED_BY, Actor, desired_objects
from .conditions import Cond, job_condition, merge_conditions, ready_condition
from .kubeclient import KubeClient
from .model import GROUP, KIND, PLURAL, VERSION, WorkloadKind
from .queues import BrokerUnavailable, QueueManager

__all__ = ["FINALIZER", "Controller"]

# The field manager that owns an autoscaled workload's spec.replicas once it exists.
REPLICAS_MANAGER = "asya-operator-replicas"
log = logging.getLogger("asya_operator")

FINALIZER = "asya.sh/queue-cleanup"
API_VERSION = f"{GROUP}/{VERSION}"
_KINDS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "Service": "v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "ScaledJob": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
}
BROKER_RETRY = 15.0
APPLY_RETRY = 30.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or b"")["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.status} {exc.reason}"


class Controller:
    def __init__(
        self,
        kube: KubeClient,
        queues: QueueManager,
        *,
        namespaces: tuple[str, ...] = (),
        resync: float = 300.0,
        workers: int = 4,
        clock: Callable[[], str] = _now,
    ) -> None:
        self.kube = kube
        self.queues = queues
        self.namespaces = namespaces
        self.resync = resync
        self.workers = workers
        self.clock = clock
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._pending: set[tuple[str, str]] = set()
        self._busy: set[tuple[str, str]] = set()
        self._again: set[tuple[str, str]] = set()
        self.reconciles = 0
        self.idle = asyncio.Event()
        self._timers: set[asyncio.Task[None]] = set()

    # --- queueing -----------------------------------------------------------------------------

    def enqueue(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key in self._busy:
            self._again.add(key)  # reconcile once more after the running one
        elif key not in self._pending:
            self._pending.add(key)
            self.idle.clear()
            self._queue.put_nowait(key)

    def _enqueue_later(self, tg: asyncio.TaskGroup, key: tuple[str, str], delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            self.enqueue(*key)

        task = tg.create_task(later(), name=f"requeue-{key[0]}/{key[1]}")
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _worker(self, tg: asyncio.TaskGroup) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            self._busy.add(key)
            try:
                delay = await self.reconcile(*key)
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                log.warning("reconcile %s/%s: API error %s; retrying", *key, exc.status)
                delay = 5.0
            except Exception:
                log.exception("reconcile %s/%s failed; retrying", *key)
                delay = 10.0
            finally:
                self._busy.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.enqueue(*key)
            elif delay is not None:
                self._enqueue_later(tg, key, delay)
            if not self._pending and not self._busy and self._queue.empty():
                self.idle.set()

    # --- running ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._worker(tg), name=f"worker-{i}") for i in range(self.workers)
            ]
            for namespace in self.namespaces or (None,):
                tasks.append(
                    tg.create_task(self._watch_asyas(namespace), name=f"watch-{namespace}")
                )
                tasks.append(
                    tg.create_task(self._watch_workloads(namespace), name=f"owned-{namespace}")
                )
            tasks.append(tg.create_task(self._resync(), name="resync"))
            await stop.wait()
            for task in [*tasks, *self._timers]:
                task.cancel()

    async def _list_asyas(self, namespace: str | None) -> dict[str, Any]:
        custom = CustomObjectsApi(self.kube.api)
        if namespace:
            return dict(
                await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            )
        return dict(await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL))

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            for namespace in self.namespaces or (None,):
                with contextlib.suppress(ApiException):
                    listing = await self._list_asyas(namespace)
                    for item in listing.get("items", []):
                        self.enqueue(item["metadata"]["namespace"], item["metadata"]["name"])

    async def _stream(
        self, list_call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """List then watch from the list's resourceVersion; relist on 410 Gone or errors."""
        backoff = 0.5
        while True:
            try:
                listing = await list_call(*args, **kwargs)
                listing = listing if isinstance(listing, dict) else listing.to_dict()
                for item in listing.get("items", []):
                    yield item if isinstance(item, dict) else item.to_dict()
                rv = (listing.get("metadata") or {}).get("resourceVersion") or (
                    listing.get("metadata") or {}
                ).get("resource_version")
                w = watch.Watch()
                async with w:
                    async for event in w.stream(
                        list_call,
                        *args,
                        resource_version=rv,
                        timeout_seconds=300,
                        allow_watch_bookmarks=True,
                        **kwargs,
                    ):
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            code = obj.get("code") if isinstance(obj, dict) else None
                            raise ApiException(status=code or 500, reason="watch error")
                        if event["type"] == "BOOKMARK":
                            continue
                        yield obj if isinstance(obj, dict) else obj.to_dict()
                backoff = 0.5
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("watch failed (%s); relisting in %.1fs", exc.status, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            except (OSError, TimeoutError) as exc:
                log.warning("watch connection failed (%s); relisting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _watch_asyas(self, namespace: str | None) -> None:
        custom = CustomObjectsApi(self.kube.api)
        if namespace:
            stream = self._stream(
                custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
        else:
            stream = self._stream(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        async for obj in stream:
            meta = obj.get("metadata") or {}
            self.enqueue(meta["namespace"], meta["name"])

    async def _watch_workloads(self, namespace: str | None) -> None:
        """Owned workloads changing (replicas becoming ready) update the owner's status."""
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        apps = AppsV1Api(self.kube.api)
        batch = BatchV1Api(self.kube.api)
        calls = (
            [
                apps.list_namespaced_deployment,
                apps.list_namespaced_stateful_set,
                batch.list_namespaced_job,
            ]
            if namespace
            else [
                apps.list_deployment_for_all_namespaces,
                apps.list_stateful_set_for_all_namespaces,
                batch.list_job_for_all_namespaces,
            ]
        )
        async with asyncio.TaskGroup() as tg:
            for call in calls:
                args = (namespace,) if namespace else ()
                tg.create_task(self._follow_owned(call, args, selector))

    async def _follow_owned(
        self, call: Callable[..., Any], args: tuple[Any, ...], selector: str
    ) -> None:
        async for obj in self._stream(call, *args, label_selector=selector):
            meta = obj.get("metadata") or {}
            actor = (meta.get("labels") or {}).get(ACTOR_LABEL)
            if actor:
                self.enqueue(meta["namespace"], actor)

    # --- one resource -------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one Asya to its desired state. Returns seconds until it should run again
        (a temporary failure), or None."""
        self.reconciles += 1
        try:
            obj = await self.kube.get(API_VERSION, KIND, namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return await self._finalize(obj)
        try:
            actor = Actor.from_resource(obj)
        except msgspec.ValidationError as exc:
            invalid = Cond("Ready", False, "InvalidSpec", str(exc))
            await self._write_status(obj, [invalid], extra={})
            return None
        await self._sync_finalizer(obj, actor.spec.delete_queue_on_delete)

        requeue: float | None = None
        counts = {"replicas": 0, "readyReplicas": 0}
        applied: dict[str, dict[str, Any]] = {}
        managed: list[str] = []
        before = set((obj.get("status") or {}).get("managedObjects") or [])
        try:
            for desired in desired_objects(actor):
                key = f"{desired['kind']}/{desired['metadata']['name']}"
                created = None if key in before else await self._create_at_min(actor, desired)
                applied[desired["kind"]] = created or await self.kube.apply(desired)
                managed.append(key)
            workload, counts = await self._workload_state(actor, applied)
            await self._prune(obj, managed)
        except ApiException as exc:
            if exc.status >= 500 or exc.status == 429:
                raise
            workload = Cond("WorkloadReady", False, "ApplyFailed", _api_message(exc))
            managed = list((obj.get("status") or {}).get("managedObjects", []))
            requeue = APPLY_RETRY
        scaling = (
            Cond(
                "ScalingReady",
                True,
                "KedaApplied",
                f"{actor.spec.scaling.min_replicas}.."
                f"{actor.spec.scaling.max_replicas} replicas, "
                f"{actor.spec.scaling.queue_length} messages each",
            )
            if actor.spec.scaling.enabled and workload.reason != "ApplyFailed"
            else Cond("ScalingReady", True, "Disabled", "fixed replicas")
            if not actor.spec.scaling.enabled
            else Cond("ScalingReady", False, "ApplyFailed", workload.message)
        )
        depth: int | None = None
        s = actor.spec
        try:
            depth = await self.queues.ensure(
                s.transport.exchange, actor.queue, (s.transport.happy_end, s.transport.error_end)
            )
            queue = Cond(
                "QueueReady", True, "Declared", f"{actor.queue!r} bound on {s.transport.exchange!r}"
            )
        except BrokerUnavailable as exc:
            queue = Cond("QueueReady", False, "BrokerUnavailable", str(exc))
            requeue = BROKER_RETRY if requeue is None else min(requeue, BROKER_RETRY)
        parts = [workload, scaling, queue]
        extra = {
            "queue": actor.queue,
            "managedObjects": managed,
            "queueDepth": depth,
            **counts,
        }
        await self._write_status(obj, [ready_condition(parts), *parts], extra=extra)
        return requeue

    async def _workload_state(
        self, actor: Actor, applied: dict[str, dict[str, Any]]
    ) -> tuple[Cond, dict[str, int]]:
        """``WorkloadReady`` and the replica counts, from the live workload (for a ScaledJob, the
        Jobs KEDA started for it)."""
        kind = actor.spec.workload.kind
        if kind is WorkloadKind.JOB:
            scaled = actor.spec.scaling.enabled
            if scaled:
                listed = await self.kube.list_objects(
                    "batch/v1", "Job", actor.namespace,
                    label_selector=f"{KEDA_JOB_LABEL}={actor.name}",
                )  # fmt: skip
                jobs = list(listed.get("items") or [])
            else:
                jobs = [applied["Job"]] if "Job" in applied else []
            running = [j.get("status") or {} for j in jobs]
            counts = {
                "replicas": sum(int(st.get("active") or 0) for st in running),
                "readyReplicas": sum(int(st.get("ready") or 0) for st in running),
            }
            cond = job_condition(jobs, scaled=scaled, parallelism=actor.spec.workload.replicas)
            return cond, counts
        status = applied.get(kind.value, {}).get("status") or {}
        ready = int(status.get("readyReplicas") or 0)
        counts = {"replicas": int(status.get("replicas") or 0), "readyReplicas": ready}
        want = (
            actor.spec.scaling.min_replicas
            if actor.spec.scaling.enabled
            else actor.spec.workload.replicas
        )
        if ready >= want:
            cond = Cond("WorkloadReady", True, "ReplicasReady", f"{ready}/{want} replicas ready")
        else:
            cond = Cond("WorkloadReady", False, "Progressing", f"{ready}/{want} replicas ready")
        return cond, counts

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
        except ApiException as exc:
            if exc.status != 404:
                raise
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
        before = (obj.get("status") or {}).get("managedObjects") or []
        meta = obj["metadata"]
        for key in before:
            if key in managed:
                continue
            kind, _, name = key.partition("/")
            if kind not in _KINDS:
                continue
            try:
                await self.kube.delete(_KINDS[kind], kind, meta["namespace"], name)
                log.info("%s/%s: deleted %s no longer needed", meta["namespace"], meta["name"], key)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    async def _sync_finalizer(self, obj: dict[str, Any], wanted: bool) -> None:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if wanted == (FINALIZER in finalizers):
            return
        if wanted:
            finalizers.append(FINALIZER)
        else:
            finalizers.remove(FINALIZER)
        patched = await self.kube.merge_patch(
            API_VERSION,
            KIND,
            meta["namespace"],
            meta["name"],
            {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}},
        )
        meta["finalizers"] = finalizers
        meta["resourceVersion"] = patched["metadata"]["resourceVersion"]

    async def _finalize(self, obj: dict[str, Any]) -> float | None:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
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
        finalizers.remove(FINALIZER)
        with contextlib.suppress(ApiException):  # 404/409: gone already, or retried next event
            await self.kube.merge_patch(
                API_VERSION,
                KIND,
                meta["namespace"],
                meta["name"],
                {
                    "metadata": {
                        "finalizers": finalizers,
                        "resourceVersion": meta["resourceVersion"],
                    }
                },
            )
        return None

    async def _write_status(
        self, obj: dict[str, Any], wanted: list[Cond], *, extra: dict[str, Any]
    ) -> None:
        meta = obj["metadata"]
        current = obj.get("status") or {}
        generation = int(meta.get("generation") or 0)
        conditions = merge_conditions(
            current.get("conditions") or [], wanted, generation=generation, now=self.clock()
        )
        status = {**extra, "conditions": conditions, "observedGeneration": generation}
        comparable = {k: v for k, v in status.items() if v is not None}
        if all(current.get(k) == v for k, v in comparable.items()):
            return  # nothing changed: no write
        await self.kube.merge_patch(
            API_VERSION,
            KIND,
            meta["namespace"],
            meta["name"],
            {"status": status},
            subresource="status",
        )
        # Events for what a person should see: each failure as it appears, and Ready turning
        # True (not every condition's first True: that would be four events per new resource).
        before = {c.get("type"): c.get("status") for c in current.get("conditions") or []}
        for cond in wanted:
            if before.get(cond.type) == cond.status or (cond.ok and cond.type != "Ready"):
                continue
            kind = "Normal" if cond.ok else "Warning"
            message = f"{cond.type}={cond.status}: {cond.message}"
            await self._event(obj, kind, cond.reason, message)

    async def _event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = self.clock()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "asya-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(event)
        except ApiException as exc:  # events are best effort; the status carries the truth
            log.warning(
                "event %s for %s/%s not recorded: %s",
                reason,
                meta["namespace"],
                meta["name"],
                exc.status,
            )
