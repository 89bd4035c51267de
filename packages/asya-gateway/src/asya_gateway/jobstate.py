"""A job's state machine, as pure functions: no I/O, no clock, no database.

``apply(state, event, now)`` says what one event does to a job: the new state, what to record in
the job's event history (which also wakes its followers), and whether the job row changes.
The job store only carries the answer out, inside a transaction that holds the job's row, so
every rule about a job's lifecycle is here and unit-tested case by case
(``tests/test_jobstate.py``)::

    pending -> running -> succeeded | failed | timed_out | cancelled

A terminal state is final: every later event (a late or duplicate terminal message under
at-least-once delivery, a cancel, a timeout) changes nothing. Step events that arrive after the
end are only recorded in the history, marked ``late``; partial results after the end are
dropped (nobody follows the job any more).

Partial results (``partial`` step events of a streaming handler) are advisory history only:
a ``partial`` record ``{"actor", "step", "id", "offset", "chunks"}`` per event, in the order the
events came; the job's state does not change.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from asya_protocol import EventType, StepEvent

from .fanout import Branches, copied, empty_state

__all__ = [
    "TERMINAL",
    "Cancel",
    "Effect",
    "Event",
    "HistoryKind",
    "JobState",
    "JobStatus",
    "PublishRejected",
    "Published",
    "Record",
    "Terminal",
    "Timeout",
    "Transition",
    "apply",
    "created",
    "relevant",
]


class JobStatus(StrEnum):
    PENDING = "pending"  # recorded; its first envelope not yet confirmed by the broker
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED}
)


class HistoryKind(StrEnum):
    """The kinds of a job's history events (the SSE event names)."""

    STATUS = "status"
    PROGRESS = "progress"
    BRANCH = "branch"
    PARTIAL = "partial"


class Effect(StrEnum):
    PERSIST = "persist"  # write the job's new state
    NOTIFY = "notify"  # append the records to the job's history and wake its followers
    IGNORE = "ignore"  # nothing at all (a late or duplicate event)


@dataclass(frozen=True, kw_only=True)
class JobState:
    """What the state machine knows of a job (the mutable columns of its row)."""

    status: JobStatus
    root_id: str
    branches: Mapping[str, Any] = dataclasses.field(default_factory=empty_state)
    progress: float | None = 0.0
    message: str | None = None
    result: Any = None
    error: Any = None
    updated_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None


@dataclass(frozen=True)
class Record:
    """One entry of the job's event history."""

    kind: HistoryKind
    data: dict[str, Any]


@dataclass(frozen=True)
class Transition:
    state: JobState
    effects: frozenset[Effect]
    records: tuple[Record, ...] = ()

    @property
    def changed(self) -> bool:
        """The job's state changed (the event was accepted)."""
        return Effect.PERSIST in self.effects


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """The broker confirmed the job's first envelope."""


@dataclass(frozen=True)
class PublishRejected:
    """The first envelope could not be delivered (no queue for the first step, broker down)."""

    reason: str


@dataclass(frozen=True)
class Cancel:
    """The client cancelled the job."""


@dataclass(frozen=True)
class Timeout:
    """The job's deadline passed (found by the sweeper)."""


@dataclass(frozen=True)
class Terminal:
    """A message of the job reached happy-end (``ok``) or error-end: one branch ended."""

    message_id: str
    ok: bool
    payload: Any


Event = Published | PublishRejected | Cancel | Timeout | Terminal | StepEvent

CANCELLED_ERROR = {"error": "cancelled", "message": "cancelled by the client"}
TIMEOUT_ERROR = {"error": "timeout", "message": "the job did not finish before its deadline"}

_IGNORE = frozenset({Effect.IGNORE})
_WRITE = frozenset({Effect.PERSIST, Effect.NOTIFY})
_RECORD_ONLY = frozenset({Effect.NOTIFY})


def created(tool: str, root_id: str, now: datetime.datetime) -> Transition:
    """A new job: pending, with one branch (its root message) to finish."""
    state = JobState(status=JobStatus.PENDING, root_id=root_id, updated_at=now)
    record = Record(HistoryKind.STATUS, {"status": JobStatus.PENDING.value, "tool": tool})
    return Transition(state, _WRITE, (record,))


def relevant(event: StepEvent) -> bool:
    """Whether a step event can matter to a job (``received`` says less than ``started``)."""
    return event.type is not EventType.RECEIVED


def apply(state: JobState, event: Event, now: datetime.datetime) -> Transition:
    """What ``event`` does to a job in ``state`` at ``now``."""
    match event:
        case Published():
            if state.status is not JobStatus.PENDING:
                return _ignored(state)  # already further along (its first step reported first)
            new = dataclasses.replace(state, status=JobStatus.RUNNING, updated_at=now)
            return Transition(new, _WRITE, (_status(JobStatus.RUNNING),))
        case PublishRejected(reason=reason):
            return _end(state, JobStatus.FAILED, {"error": "unroutable", "message": reason}, now)
        case Cancel():
            return _end(state, JobStatus.CANCELLED, dict(CANCELLED_ERROR), now)
        case Timeout():
            return _end(state, JobStatus.TIMED_OUT, dict(TIMEOUT_ERROR), now)
        case Terminal():
            return _terminal(state, event, now)
        case StepEvent():
            return _step(state, event, now)
    raise TypeError(f"not a job event: {event!r}")  # pragma: no cover - the union is closed


def _ignored(state: JobState) -> Transition:
    return Transition(state, _IGNORE)


def _status(status: JobStatus, **data: Any) -> Record:
    return Record(HistoryKind.STATUS, {"status": status.value, **data})


def _end(
    state: JobState, status: JobStatus, error: dict[str, Any], now: datetime.datetime
) -> Transition:
    """Finish an unfinished job without a result (failed to start, cancelled, timed out)."""
    if state.status.terminal:
        return _ignored(state)
    new = dataclasses.replace(state, status=status, error=error, updated_at=now, finished_at=now)
    return Transition(new, _WRITE, (_status(status, error=error),))


def _terminal(state: JobState, event: Terminal, now: datetime.datetime) -> Transition:
    if state.status.terminal:
        return _ignored(state)  # a duplicate or late result: the job's end is final
    outcome: dict[str, Any] = (
        {"ok": True, "result": event.payload} if event.ok else {"ok": False, "error": event.payload}
    )
    branches = Branches(copied(state.branches))
    branches.ended(event.message_id, outcome)
    new = dataclasses.replace(state, branches=branches.state)
    record = Record(HistoryKind.BRANCH, {"id": event.message_id, **outcome})
    return _maybe_finish(new, branches, (record,), now)


def _partial(state: JobState, event: StepEvent) -> Transition:
    """Partial results: one history record, nothing else; dropped once the job has ended."""
    if state.status.terminal:
        return _ignored(state)
    data: dict[str, Any] = {
        "actor": event.actor,
        "step": event.current or 0,
        "id": event.id,
        "offset": event.offset or 0,
        "chunks": list(event.chunks),
    }
    return Transition(state, _RECORD_ONLY, (Record(HistoryKind.PARTIAL, data),))


def _step(state: JobState, event: StepEvent, now: datetime.datetime) -> Transition:
    if not relevant(event):
        return _ignored(state)
    if event.type is EventType.PARTIAL:
        return _partial(state, event)
    current = event.current or 0
    if state.status.terminal:
        # Step events travel apart from results and may come after the job finished:
        # keep them in the history (a step's last progress message often rides on its late
        # done), change nothing else.
        late = {
            "type": event.type.value,
            "actor": event.actor,
            "step": current,
            "steps": list(event.steps),
            "late": True,
        }
        record = Record(HistoryKind.PROGRESS, _with_what_it_said(late, event))
        return Transition(state, _RECORD_ONLY, (record,))
    progress = state.progress
    overall = _overall(event, current)
    if progress is None or overall > progress:
        progress = min(overall, 1.0)
    branches = Branches(copied(state.branches))
    if event.type is EventType.DONE and event.id:
        if event.child_ids:
            branches.fanned_out(event.id, list(event.child_ids))
        elif event.children == 0:
            branches.ended(event.id, {"ok": True, "result": None, "dropped": True})
    new = dataclasses.replace(
        state,
        # The first step reported before the publish was confirmed: the job runs.
        status=JobStatus.RUNNING if state.status is JobStatus.PENDING else state.status,
        progress=progress,
        message=event.message or state.message,
        updated_at=now,
        branches=branches.state,
    )
    data: dict[str, Any] = {
        "type": event.type.value,
        "actor": event.actor,
        "step": current,
        "steps": list(event.steps),
        "progress": progress,
    }
    record = Record(HistoryKind.PROGRESS, _with_what_it_said(data, event))
    return _maybe_finish(new, branches, (record,), now)


def _with_what_it_said(data: dict[str, Any], event: StepEvent) -> dict[str, Any]:
    """A step event's history record with its message and error, when it has them."""
    if event.message:
        data["message"] = event.message
    if event.error:
        data["error"] = event.error
    return data


def _overall(event: StepEvent, current: int) -> float:
    """The job's progress (0..1) that a step event reports."""
    steps = max(len(event.steps), 1)
    if event.type is EventType.PROGRESS:
        return (current + (event.progress or 0.0)) / steps
    if event.type is EventType.DONE:
        return (current + 1) / steps
    return current / steps


def _maybe_finish(
    state: JobState, branches: Branches, records: tuple[Record, ...], now: datetime.datetime
) -> Transition:
    """Finish the job if every branch has ended: succeeded, or failed if any branch failed."""
    if not branches.complete(state.root_id):
        return Transition(state, _WRITE, records)
    leaves = branches.leaves(state.root_id)
    fan_out = bool(branches.state["children"])
    failed = [leaf for leaf in leaves if not leaf.get("ok")]
    if fan_out:
        kept = ("id", "result", "error", "dropped")
        result: Any = {"branches": [{k: v for k, v in b.items() if k in kept} for b in leaves]}
    else:
        result = leaves[0].get("result") if leaves and leaves[0].get("ok") else None
    error = state.error
    if failed and fan_out:
        error = {
            "error": "branch_failed",
            "message": f"{len(failed)} of {len(leaves)} branches failed",
            "branches": [f["error"] for f in failed],
        }
    elif failed:
        error = failed[0]["error"]
    status = JobStatus.FAILED if failed else JobStatus.SUCCEEDED
    new = dataclasses.replace(
        state,
        status=status,
        result=result,
        error=error,
        progress=state.progress if failed else 1.0,
        updated_at=now,
        finished_at=now,
    )
    final = _status(status, result=result, error=error)
    return Transition(new, _WRITE, (*records, final))
