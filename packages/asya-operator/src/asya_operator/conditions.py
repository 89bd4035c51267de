"""Status conditions, computed purely: the same inputs give the same status, so a reconcile that
changes nothing writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CONDITION_TYPES", "Cond", "merge_conditions", "ready_condition"]

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
