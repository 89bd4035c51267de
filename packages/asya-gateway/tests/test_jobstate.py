"""The job state machine, case by case, with no I/O: every (state, event) pair."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from asya_gateway.jobstate import (
    TERMINAL,
    Cancel,
    Effect,
    Event,
    HistoryKind,
    JobState,
    JobStatus,
    Published,
    PublishRejected,
    Terminal,
    Timeout,
    Transition,
    apply,
    created,
    relevant,
)
from asya_protocol import EventType, StepEvent

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
NOW = T0 + datetime.timedelta(seconds=5)
STEPS = ("preprocess", "inference", "postprocess")
ROOT = "root-1"
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


def job(status: JobStatus = JobStatus.RUNNING, **changes: Any) -> JobState:
    state = created("classify_text", ROOT, T0).state
    return dataclasses.replace(state, status=status, **changes)


def finished(status: JobStatus) -> JobState:
    return job(status, error={"error": "x"}, finished_at=T0, result={"r": 1}, progress=0.5)


def step(kind: EventType, current: int = 0, **fields: Any) -> StepEvent:
    return StepEvent(
        type=kind, actor=STEPS[current], time=0.0, steps=STEPS, current=current, **fields
    )


def ignored(transition: Transition, before: JobState) -> bool:
    return (
        transition.effects == {Effect.IGNORE}
        and transition.state == before
        and not transition.records
        and not transition.changed
    )


def statuses(transition: Transition) -> list[str]:
    return [r.data["status"] for r in transition.records if r.kind is HistoryKind.STATUS]


# --- the enum and a new job -------------------------------------------------------------------


def test_statuses_and_terminal_set() -> None:
    assert [s.value for s in JobStatus] == [
        "pending",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
    ]
    assert {s for s in JobStatus if s.terminal} == TERMINAL
    assert not JobStatus.PENDING.terminal
    assert not JobStatus.RUNNING.terminal


def test_a_new_job_is_pending_with_one_status_record() -> None:
    t = created("classify_text", ROOT, T0)
    assert t.state.status is JobStatus.PENDING
    assert t.state.root_id == ROOT
    assert t.state.progress == 0.0
    assert t.state.updated_at == T0
    assert t.state.finished_at is None
    assert t.effects == {Effect.PERSIST, Effect.NOTIFY}
    assert [(r.kind, r.data) for r in t.records] == [
        (HistoryKind.STATUS, {"status": "pending", "tool": "classify_text"})
    ]


# --- Published (the first envelope confirmed) -------------------------------------------------


def test_published_moves_pending_to_running() -> None:
    t = apply(job(JobStatus.PENDING), Published(), NOW)
    assert t.state.status is JobStatus.RUNNING
    assert t.state.updated_at == NOW
    assert t.changed
    assert statuses(t) == ["running"]
    assert t.records[0].data == {"status": "running"}


@pytest.mark.parametrize("status", [JobStatus.RUNNING, *sorted(TERMINAL)])
def test_published_after_the_job_moved_on_is_ignored(status: JobStatus) -> None:
    before = job(status)
    assert ignored(apply(before, Published(), NOW), before)


# --- ends without a result: publish rejected, cancel, timeout ---------------------------------

ENDS: list[tuple[Event, JobStatus, dict[str, str]]] = [
    (
        PublishRejected("no queue is bound to the first step 'x'"),
        JobStatus.FAILED,
        {"error": "unroutable", "message": "no queue is bound to the first step 'x'"},
    ),
    (Cancel(), JobStatus.CANCELLED, {"error": "cancelled", "message": "cancelled by the client"}),
    (
        Timeout(),
        JobStatus.TIMED_OUT,
        {"error": "timeout", "message": "the job did not finish before its deadline"},
    ),
]


@pytest.mark.parametrize("status", UNFINISHED)
@pytest.mark.parametrize(("event", "final", "error"), ENDS)
def test_an_unfinished_job_ends(
    status: JobStatus, event: Event, final: JobStatus, error: dict[str, str]
) -> None:
    before = job(status, progress=0.4)
    t = apply(before, event, NOW)
    assert t.state.status is final
    assert t.state.error == error
    assert t.state.finished_at == t.state.updated_at == NOW
    assert t.state.progress == 0.4  # kept as it was
    assert t.state.result is None
    assert t.effects == {Effect.PERSIST, Effect.NOTIFY}
    assert [r.data for r in t.records] == [{"status": final.value, "error": error}]


@pytest.mark.parametrize("status", sorted(TERMINAL))
@pytest.mark.parametrize(("event", "final", "error"), ENDS)
def test_a_finished_job_ignores_cancel_timeout_and_publish_failure(
    status: JobStatus, event: Event, final: JobStatus, error: dict[str, str]
) -> None:
    before = finished(status)
    assert ignored(apply(before, event, NOW), before)


# --- terminal messages (happy-end, error-end) -------------------------------------------------


@pytest.mark.parametrize("status", UNFINISHED)
def test_succeeded_from_happy_end(status: JobStatus) -> None:
    t = apply(job(status), Terminal(ROOT, True, {"result": "ok"}), NOW)
    assert t.state.status is JobStatus.SUCCEEDED
    assert t.state.result == {"result": "ok"}
    assert t.state.error is None
    assert t.state.progress == 1.0
    assert t.state.finished_at == NOW
    assert [r.kind for r in t.records] == [HistoryKind.BRANCH, HistoryKind.STATUS]
    assert t.records[0].data == {"id": ROOT, "ok": True, "result": {"result": "ok"}}
    assert t.records[1].data == {
        "status": "succeeded",
        "result": {"result": "ok"},
        "error": None,
    }


@pytest.mark.parametrize("status", UNFINISHED)
def test_failed_from_error_end(status: JobStatus) -> None:
    error = {"error": "handler_error", "message": "broken", "step": "inference"}
    t = apply(job(status, progress=0.3), Terminal(ROOT, False, error), NOW)
    assert t.state.status is JobStatus.FAILED
    assert t.state.error == error
    assert t.state.result is None
    assert t.state.progress == 0.3  # a failed job keeps the progress it reached
    assert t.records[0].data == {"id": ROOT, "ok": False, "error": error}
    assert statuses(t) == ["failed"]


@pytest.mark.parametrize("ok", [True, False])
@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_duplicate_and_late_terminal_messages_change_nothing(status: JobStatus, ok: bool) -> None:
    before = finished(status)
    assert ignored(apply(before, Terminal(ROOT, ok, {"other": 1}), NOW), before)


def test_a_duplicate_after_success_is_ignored_whatever_it_says() -> None:
    done = apply(job(), Terminal(ROOT, True, {"result": "first"}), NOW).state
    again = apply(done, Terminal(ROOT, True, {"result": "second"}), NOW)
    contradicting = apply(done, Terminal(ROOT, False, {"error": "late"}), NOW)
    assert ignored(again, done)
    assert ignored(contradicting, done)
    assert done.result == {"result": "first"}


def test_a_terminal_message_of_another_branch_waits_for_the_rest() -> None:
    t = apply(job(), Terminal("not-the-root", True, 1), NOW)
    assert t.state.status is JobStatus.RUNNING
    assert t.effects == {Effect.PERSIST, Effect.NOTIFY}
    assert [r.kind for r in t.records] == [HistoryKind.BRANCH]
    assert t.state.branches["ended"] == {"not-the-root": {"ok": True, "result": 1}}


# --- step events ------------------------------------------------------------------------------


def test_received_is_not_relevant_and_ignored() -> None:
    received = step(EventType.RECEIVED)
    assert not relevant(received)
    assert all(relevant(step(k)) for k in EventType if k is not EventType.RECEIVED)
    before = job(JobStatus.PENDING)
    assert ignored(apply(before, received, NOW), before)


def test_a_terminal_message_leaves_the_previous_state_untouched() -> None:
    """No deep copy, and no edit in place either: the state given is never changed."""
    before = job(branches={"children": {ROOT: ["c1", "c2"]}, "ended": {}})
    snapshot = {k: dict(v) for k, v in before.branches.items()}
    after = apply(before, Terminal("c1", True, {"deep": [[[1]]]}), NOW)
    assert dict(before.branches) == snapshot
    assert after.state.branches["ended"]["c1"]["result"] == {"deep": [[[1]]]}


@pytest.mark.parametrize(
    ("event", "progress"),
    [
        (step(EventType.STARTED, 1), 1 / 3),
        (step(EventType.PROGRESS, 1, progress=0.5, message="thinking"), 1.5 / 3),
        (step(EventType.DONE, 1, id="m", children=1), 2 / 3),
        (step(EventType.RETRY, 1, attempt=2), 1 / 3),
        (step(EventType.FAILED, 1, error="handler_error"), 1 / 3),
    ],
)
def test_a_step_event_reports_progress(event: StepEvent, progress: float) -> None:
    t = apply(job(JobStatus.RUNNING), event, NOW)
    assert t.state.status is JobStatus.RUNNING
    assert t.state.progress == pytest.approx(progress)
    assert t.state.updated_at == NOW
    assert t.effects == {Effect.PERSIST, Effect.NOTIFY}
    [record] = t.records
    assert record.kind is HistoryKind.PROGRESS
    assert record.data["type"] == event.type.value
    assert record.data["actor"] == "inference"
    assert record.data["step"] == 1
    assert record.data["steps"] == list(STEPS)
    assert record.data["progress"] == pytest.approx(progress)
    assert record.data.get("message") == event.message
    assert record.data.get("error") == event.error


def test_a_step_event_before_the_publish_confirm_makes_the_job_running() -> None:
    t = apply(job(JobStatus.PENDING), step(EventType.STARTED), NOW)
    assert t.state.status is JobStatus.RUNNING
    assert statuses(t) == []  # no status record: its progress says it runs
    assert ignored(apply(t.state, Published(), NOW), t.state)


def test_progress_never_goes_back_and_the_message_is_kept() -> None:
    ahead = job(progress=0.9, message="almost")
    t = apply(ahead, step(EventType.STARTED, 0), NOW)
    assert t.state.progress == 0.9
    assert t.state.message == "almost"
    t = apply(ahead, step(EventType.PROGRESS, 2, progress=1.0, message="done soon"), NOW)
    assert t.state.progress == 1.0
    assert t.state.message == "done soon"


def test_progress_from_nothing_known() -> None:
    t = apply(job(progress=None), step(EventType.STARTED, 0), NOW)
    assert t.state.progress == 0.0


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_late_step_events_are_only_recorded(status: JobStatus) -> None:
    before = finished(status)
    t = apply(before, step(EventType.DONE, 2, id="m", child_ids=("a", "b")), NOW)
    assert t.state == before
    assert t.effects == {Effect.NOTIFY}
    assert not t.changed
    [record] = t.records
    assert record.kind is HistoryKind.PROGRESS
    assert record.data == {
        "type": "done",
        "actor": "postprocess",
        "step": 2,
        "steps": list(STEPS),
        "late": True,
    }


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_a_late_step_event_keeps_its_message_and_error(status: JobStatus) -> None:
    """A step's last progress message travels on its done event, which may come after the
    result: the history keeps it (a follower replaying it sees what the step said)."""
    before = finished(status)
    done = apply(before, step(EventType.DONE, 1, message="thinking"), NOW)
    failed = apply(before, step(EventType.FAILED, 1, error="handler_error", message="no"), NOW)
    assert done.state == before
    assert failed.state == before
    assert done.records[0].data["message"] == "thinking"
    assert done.records[0].data["late"] is True
    assert "error" not in done.records[0].data
    assert failed.records[0].data["error"] == "handler_error"
    assert failed.records[0].data["message"] == "no"


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_a_late_received_event_is_not_even_recorded(status: JobStatus) -> None:
    before = finished(status)
    assert ignored(apply(before, step(EventType.RECEIVED), NOW), before)


# --- fan-out ----------------------------------------------------------------------------------


def fan_out(*children: str) -> StepEvent:
    return step(EventType.DONE, 0, id=ROOT, children=len(children), child_ids=children)


def test_fan_out_succeeds_when_every_branch_ends() -> None:
    state = apply(job(), fan_out("c1", "c2"), NOW).state
    assert state.branches["children"] == {ROOT: ["c1", "c2"]}
    state = apply(state, Terminal("c2", True, "two"), NOW).state
    assert state.status is JobStatus.RUNNING
    t = apply(state, Terminal("c1", True, "one"), NOW)
    assert t.state.status is JobStatus.SUCCEEDED
    assert t.state.result == {
        "branches": [{"id": "c1", "result": "one"}, {"id": "c2", "result": "two"}]
    }
    assert t.state.progress == 1.0


def test_a_terminal_before_its_fan_out_event_counts() -> None:
    state = apply(job(), Terminal("c1", True, "one"), NOW).state
    t = apply(state, fan_out("c1"), NOW)
    assert t.state.status is JobStatus.SUCCEEDED
    assert [r.kind for r in t.records] == [HistoryKind.PROGRESS, HistoryKind.STATUS]


def test_fan_out_with_a_failing_branch() -> None:
    state = apply(job(), fan_out("c1", "c2"), NOW).state
    state = apply(state, Terminal("c1", True, "one"), NOW).state
    t = apply(state, Terminal("c2", False, {"error": "refused"}), NOW)
    assert t.state.status is JobStatus.FAILED
    assert t.state.error == {
        "error": "branch_failed",
        "message": "1 of 2 branches failed",
        "branches": [{"error": "refused"}],
    }
    assert t.state.result == {
        "branches": [{"id": "c1", "result": "one"}, {"id": "c2", "error": {"error": "refused"}}]
    }


def test_an_empty_fan_out_of_the_root_succeeds_with_no_result() -> None:
    t = apply(job(), step(EventType.DONE, 0, id=ROOT, children=0), NOW)
    assert t.state.status is JobStatus.SUCCEEDED
    assert t.state.result is None  # the root ended (dropped); nothing fanned out
    assert t.state.branches["ended"][ROOT] == {"ok": True, "result": None, "dropped": True}


def test_a_dropped_branch() -> None:
    state = apply(job(), fan_out("c1", "c2"), NOW).state
    state = apply(state, step(EventType.DONE, 1, id="c1", children=0), NOW).state
    t = apply(state, Terminal("c2", True, "two"), NOW)
    assert t.state.status is JobStatus.SUCCEEDED
    assert t.state.result["branches"][0] == {"id": "c1", "result": None, "dropped": True}


def test_transitions_do_not_change_the_state_they_were_given() -> None:
    before = apply(job(), fan_out("c1", "c2"), NOW).state
    snapshot = dataclasses.replace(
        before, branches={k: dict(v) for k, v in before.branches.items()}
    )
    apply(before, Terminal("c1", True, 1), NOW)
    apply(before, fan_out("x"), NOW)
    assert before == snapshot


# --- every pair, at a glance ------------------------------------------------------------------

EVENTS: list[Event] = [
    Published(),
    PublishRejected("r"),
    Cancel(),
    Timeout(),
    Terminal(ROOT, True, 1),
    Terminal(ROOT, False, {"error": "e"}),
    step(EventType.STARTED),
]
EXPECTED: dict[JobStatus, list[JobStatus | None]] = {
    # None: ignored. Columns in the order of EVENTS.
    JobStatus.PENDING: [
        JobStatus.RUNNING,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.RUNNING,
    ],
    JobStatus.RUNNING: [
        None,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.RUNNING,
    ],
    **{status: [None] * len(EVENTS) for status in TERMINAL},
}


@pytest.mark.parametrize("status", list(JobStatus))
@pytest.mark.parametrize("index", range(len(EVENTS)))
def test_the_transition_table(status: JobStatus, index: int) -> None:
    before = finished(status) if status.terminal else job(status)
    t = apply(before, EVENTS[index], NOW)
    expected = EXPECTED[status][index]
    if expected is None:
        assert not t.changed
        assert t.state == before
    else:
        assert t.changed
        assert t.state.status is expected


# --- partial results --------------------------------------------------------------------------


@pytest.mark.parametrize("status", UNFINISHED)
def test_partial_results_are_recorded_and_change_nothing(status: JobStatus) -> None:
    before = job(status, progress=0.25, message="thinking")
    event = step(EventType.PARTIAL, 1, id="m-1", chunks=("Hel", {"t": 1}, None), offset=3)
    assert relevant(event)
    t = apply(before, event, NOW)
    assert t.state == before
    assert t.effects == {Effect.NOTIFY}
    assert not t.changed
    [record] = t.records
    assert record.kind is HistoryKind.PARTIAL
    assert HistoryKind.PARTIAL.value == "partial"
    assert record.data == {
        "actor": "inference",
        "step": 1,
        "id": "m-1",
        "offset": 3,
        "chunks": ["Hel", {"t": 1}, None],
    }


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_partial_results_after_the_end_are_dropped(status: JobStatus) -> None:
    before = finished(status)
    assert ignored(apply(before, step(EventType.PARTIAL, 2, id="m", chunks=("x",)), NOW), before)
