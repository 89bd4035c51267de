"""Status conditions, computed purely: the same inputs give the same status, so a reconcile that
changes nothing writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CONDITION_TYPES", "Cond", "job_condition", "merge_conditions", "ready_condition"]

CONDITION_TYPES = ("Ready", "WorkloadReady", "ScalingReady", "QueueReady")


@dataclass(frozen=True)
class Cond:
    type: str
    ok: bool
    reason: str
    message: str = ""

    @property
    def status(self) -> str:
        return "True" if self.ok else "False"


def ready_condition(parts: list[Cond]) -> Cond:
    failing = [c for c in parts if not c.ok]
    if not failing:
        return Cond("Ready", True, "Reconciled", "workload, scaling and queue are ready")
    first = failing[0]
    return Cond("Ready", False, first.reason, f"{first.type}: {first.message}")


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


def job_condition(jobs: list[dict[str, Any]], *, scaled: bool, parallelism: int) -> Cond:
    """``WorkloadReady`` from real Job state: the actor's one Job, or the Jobs KEDA started for
    its ScaledJob (``scaled``). A failed Job is reported with the Job controller's reason; a
    ScaledJob with no Job running is ready (KEDA starts one when messages arrive) unless the
    last Job to finish failed."""
    active = [j for j in jobs if _finished(j) is None]
    ready = sum(int((j.get("status") or {}).get("ready") or 0) for j in active)
    succeeded = sum(1 for j in jobs if _finished(j) == "Complete")
    failed = [j for j in jobs if _finished(j) == "Failed"]
    if not scaled:
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
        if ready:
            return Cond("WorkloadReady", True, "JobRunning", f"{ready}/{parallelism} pods ready")
        return Cond("WorkloadReady", False, "Progressing", f"0/{parallelism} pods ready")
    counts = f"{succeeded} succeeded, {len(failed)} failed"
    if active:
        return Cond(
            "WorkloadReady", True, "JobsRunning",
            f"{len(active)} Jobs running ({ready} pods ready); {counts}",
        )  # fmt: skip
    finished = sorted(
        (j for j in jobs if _finished(j)),
        key=lambda j: max(
            (c.get("lastTransitionTime") or "" for c in j["status"].get("conditions") or []),
            default="",
        ),
    )
    if finished and _finished(finished[-1]) == "Failed":
        return Cond("WorkloadReady", False, "JobFailed", _failure(finished[-1]))
    return Cond(
        "WorkloadReady", True, "ScaledJob",
        f"no Job running: KEDA starts one as messages arrive; {counts}",
    )  # fmt: skip


def merge_conditions(
    current: list[dict[str, Any]], wanted: list[Cond], *, generation: int, now: str
) -> list[dict[str, Any]]:
    """New condition list: ``lastTransitionTime`` moves only when a status flips."""
    previous = {c.get("type"): c for c in current}
    out = []
    for cond in wanted:
        before = previous.get(cond.type)
        changed = before is None or before.get("status") != cond.status
        out.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "observedGeneration": generation,
                "lastTransitionTime": now if changed else before.get("lastTransitionTime", now),  # type: ignore[union-attr]
            }
        )
    return out
