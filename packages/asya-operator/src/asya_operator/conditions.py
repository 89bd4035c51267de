"""Status, computed purely: the same inputs give the same status, so a reconcile that changes
nothing writes nothing.

The reconcile gathers facts (what the API server answered, the queue's depth) and these
functions say what they mean: each condition, the typed status, and whether it differs from the
one stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .model import AsyaStatus, Condition, ScalingSpec

__all__ = [
    "Cond",
    "Observed",
    "RefusedStatus",
    "Replicas",
    "Status",
    "desired_status",
    "job_condition",
    "jobs_state",
    "merge_conditions",
    "ready_condition",
    "replicas_state",
    "scaling_condition",
    "status_body",
    "unchanged",
]


@dataclass(frozen=True)
class Cond:
    type: str
    ok: bool
    reason: str
    message: str = ""

    @property
    def status(self) -> str:
        return "True" if self.ok else "False"


@dataclass(frozen=True)
class Replicas:
    """``status.replicas`` and ``status.readyReplicas``."""

    replicas: int = 0
    ready: int = 0


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What a reconcile of a valid spec saw, besides its conditions."""

    queue: str
    managed_objects: tuple[str, ...]
    queue_depth: int | None
    replicas: Replicas


class RefusedStatus(msgspec.Struct, kw_only=True, rename="camel"):
    """The status of a spec the model refuses: only the conditions and the generation. What the
    last valid spec applied (``managedObjects`` above all) stays, so a fixed spec prunes right."""

    conditions: list[Condition]
    observed_generation: int


Status = AsyaStatus | RefusedStatus


def ready_condition(parts: list[Cond]) -> Cond:
    failing = [c for c in parts if not c.ok]
    if not failing:
        return Cond("Ready", True, "Reconciled", "workload, scaling and queue are ready")
    first = failing[0]
    return Cond("Ready", False, first.reason, f"{first.type}: {first.message}")


def scaling_condition(scaling: ScalingSpec, workload: Cond) -> Cond:
    """``ScalingReady``: KEDA's objects are applied with the workload's, so they fail with it."""
    if not scaling.enabled:
        return Cond("ScalingReady", True, "Disabled", "fixed replicas")
    if workload.reason == "ApplyFailed":
        return Cond("ScalingReady", False, "ApplyFailed", workload.message)
    return Cond(
        "ScalingReady",
        True,
        "KedaApplied",
        f"{scaling.min_replicas}..{scaling.max_replicas} replicas, "
        f"{scaling.queue_length} messages each",
    )


def replicas_state(status: Mapping[str, Any], want: int) -> tuple[Cond, Replicas]:
    """``WorkloadReady`` of a Deployment or StatefulSet from its status; ``want`` is the ready
    count that makes it ready (``minReplicas`` with scaling, else ``replicas``)."""
    ready = int(status.get("readyReplicas") or 0)
    counts = Replicas(int(status.get("replicas") or 0), ready)
    message = f"{ready}/{want} replicas ready"
    if ready >= want:
        return Cond("WorkloadReady", True, "ReplicasReady", message), counts
    return Cond("WorkloadReady", False, "Progressing", message), counts


def jobs_state(
    jobs: list[dict[str, Any]], *, scaled: bool, parallelism: int
) -> tuple[Cond, Replicas]:
    """``WorkloadReady`` and the pod counts of the actor's Jobs (see :func:`job_condition`)."""
    running = [j.get("status") or {} for j in jobs]
    counts = Replicas(
        sum(int(st.get("active") or 0) for st in running),
        sum(int(st.get("ready") or 0) for st in running),
    )
    return job_condition(jobs, scaled=scaled, parallelism=parallelism), counts


def _finished(job: dict[str, Any]) -> str | None:
    """``"Complete"`` or ``"Failed"`` for a finished Job, else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _failure(job: dict[str, Any]) -> str:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            name = (job.get("metadata") or {}).get("name", "")
            return f"Job {name}: {cond.get('reason', '')}: {cond.get('message', '')}".strip()
    return ""


def _one_job_condition(jobs: list[dict[str, Any]], parallelism: int) -> Cond:
    if not jobs:
        return Cond("WorkloadReady", False, "Progressing", "the Job is not created yet")
    job = jobs[0]
    state = _finished(job)
    if state == "Failed":
        return Cond("WorkloadReady", False, "JobFailed", _failure(job))
    if state == "Complete":
        done = int((job.get("status") or {}).get("succeeded") or 0)
        return Cond("WorkloadReady", True, "JobComplete", f"{done} pods succeeded")
    if parallelism == 0:
        return Cond("WorkloadReady", True, "Paused", "replicas 0: the Job runs no pod")
    ready = int((job.get("status") or {}).get("ready") or 0)
    if ready:
        return Cond("WorkloadReady", True, "JobRunning", f"{ready}/{parallelism} pods ready")
    return Cond("WorkloadReady", False, "Progressing", f"0/{parallelism} pods ready")


def _finished_at(job: dict[str, Any]) -> str:
    conditions = (job.get("status") or {}).get("conditions") or []
    return max((c.get("lastTransitionTime") or "" for c in conditions), default="")


def _scaled_jobs_condition(jobs: list[dict[str, Any]]) -> Cond:
    active = [j for j in jobs if _finished(j) is None]
    ready = sum(int((j.get("status") or {}).get("ready") or 0) for j in active)
    succeeded = sum(1 for j in jobs if _finished(j) == "Complete")
    failed = sum(1 for j in jobs if _finished(j) == "Failed")
    counts = f"{succeeded} succeeded, {failed} failed"
    if active:
        return Cond(
            "WorkloadReady", True, "JobsRunning",
            f"{len(active)} Jobs running ({ready} pods ready); {counts}",
        )  # fmt: skip
    finished = sorted((j for j in jobs if _finished(j)), key=_finished_at)
    if finished and _finished(finished[-1]) == "Failed":
        return Cond("WorkloadReady", False, "JobFailed", _failure(finished[-1]))
    return Cond(
        "WorkloadReady", True, "ScaledJob",
        f"no Job running: KEDA starts one as messages arrive; {counts}",
    )  # fmt: skip


def job_condition(jobs: list[dict[str, Any]], *, scaled: bool, parallelism: int) -> Cond:
    """``WorkloadReady`` from real Job state: the actor's one Job, or the Jobs KEDA started for
    its ScaledJob (``scaled``). A failed Job is reported with the Job controller's reason; a
    ScaledJob with no Job running is ready (KEDA starts one when messages arrive) unless the
    last Job to finish failed."""
    if scaled:
        return _scaled_jobs_condition(jobs)
    return _one_job_condition(jobs, parallelism)


def _merge(
    current: Sequence[Mapping[str, Any]], wanted: Sequence[Cond], *, generation: int, now: str
) -> list[Condition]:
    previous = {c.get("type"): c for c in current}
    out = []
    for cond in wanted:
        before = previous.get(cond.type)
        changed = before is None or before.get("status") != cond.status
        out.append(
            Condition(
                type=cond.type,
                status=cond.status,
                reason=cond.reason,
                message=cond.message,
                observed_generation=generation,
                last_transition_time=(
                    now if before is None or changed else before.get("lastTransitionTime", now)
                ),
            )
        )
    return out


def merge_conditions(
    current: list[dict[str, Any]], wanted: list[Cond], *, generation: int, now: str
) -> list[dict[str, Any]]:
    """New condition list: ``lastTransitionTime`` moves only when a status flips."""
    return [msgspec.to_builtins(c) for c in _merge(current, wanted, generation=generation, now=now)]


def desired_status(
    current: Mapping[str, Any],
    wanted: Sequence[Cond],
    *,
    generation: int,
    now: str,
    observed: Observed | None,
) -> Status:
    """The status to write over ``current``: a :class:`RefusedStatus` when there is nothing
    observed (the spec was refused), else the whole :class:`~asya_operator.model.AsyaStatus`."""
    conditions = _merge(current.get("conditions") or [], wanted, generation=generation, now=now)
    if observed is None:
        return RefusedStatus(conditions=conditions, observed_generation=generation)
    return AsyaStatus(
        conditions=conditions,
        observed_generation=generation,
        queue=observed.queue,
        replicas=observed.replicas.replicas,
        ready_replicas=observed.replicas.ready,
        queue_depth=observed.queue_depth,
        managed_objects=list(observed.managed_objects),
    )


def status_body(status: Status) -> dict[str, Any]:
    """The JSON merge patch of ``status`` (``queueDepth: null`` clears an unknown depth)."""
    body: dict[str, Any] = msgspec.to_builtins(status)
    return body


def unchanged(current: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """True when writing ``body`` would change nothing (a null only clears: it is no change)."""
    return all(current.get(k) == v for k, v in body.items() if v is not None)
