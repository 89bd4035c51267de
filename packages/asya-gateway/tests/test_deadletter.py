"""What becomes of a message the gateway cannot apply: pure decisions, case by case."""

from __future__ import annotations

import json

import pytest

from asya_gateway.deadletter import (
    Settle,
    Verdict,
    after_error,
    dead_letter_queue,
    unknown_job,
    worst,
)
from asya_gateway.errors import DatabaseUnavailable
from asya_gateway.messages import JOB_HEADER, Unusable, step_events, terminal_message
from asya_protocol import MAX_JSON_DEPTH


def envelope(headers: dict[str, str] | None = None, payload: object = 1) -> bytes:
    body = {"id": "m1", "route": {"steps": ["a"], "current": 1}, "payload": payload}
    if headers is not None:
        body["headers"] = headers
    return json.dumps(body).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_job_terminal_message_is_read() -> None:
    found = terminal_message(envelope({JOB_HEADER: "j1"}))
    assert not isinstance(found, Unusable)
    assert found[0] == "j1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "undecodable"),
        (b'{"route": {"steps": ["a"]}}', "undecodable"),
        (envelope(), "no asya-job-id header"),
        (envelope({"other": "x"}), "no asya-job-id header"),
        (f'{{"route": {{"steps": ["a"]}}, "payload": {nested(300)}}}'.encode(), "the limit is"),
        (b'{"route": {"steps": ["a"]}, "payload": "\xff"}', "UTF-8"),
    ],
)
def test_unusable_terminal_messages_say_why(body: bytes, reason: str) -> None:
    found = terminal_message(body)
    assert isinstance(found, Unusable)
    assert reason in found.reason


def test_step_events() -> None:
    event = {"type": "started", "actor": "a", "time": 1.0, "headers": {JOB_HEADER: "j1"}}
    found = step_events(json.dumps(event).encode())
    assert isinstance(found, list)
    assert [(job, e.type.value) for job, e in found] == [("j1", "started")]
    foreign = {**event, "headers": {}}
    assert step_events(json.dumps(foreign).encode()) == []  # another pipeline's: not ours
    # A sidecar's batch: in order, the job's events only.
    done = {**event, "type": "done", "headers": {JOB_HEADER: "j2"}}
    found = step_events(json.dumps([event, foreign, done]).encode())
    assert isinstance(found, list)
    assert [(job, e.type.value) for job, e in found] == [("j1", "started"), ("j2", "done")]
    assert isinstance(step_events(b"{"), Unusable)
    assert isinstance(step_events(b"[{]"), Unusable)
    deep = f'{{"type": "started", "actor": "a", "time": 1, "x": {nested(2000)}}}'.encode()
    too_deep = step_events(deep)  # no RecursionError: bounded before decoding
    assert isinstance(too_deep, Unusable)
    assert f"the limit is {MAX_JSON_DEPTH + 3}" in too_deep.reason


def test_the_database_down_is_retried_never_dead_lettered() -> None:
    down = DatabaseUnavailable("ConnectionRefusedError: refused")
    assert after_error(down, redelivered=False).settle is Settle.RETRY
    assert after_error(down, redelivered=True).settle is Settle.RETRY


def test_another_error_is_retried_once_then_dead_lettered() -> None:
    bug = KeyError("x")
    assert after_error(bug, redelivered=False).settle is Settle.RETRY
    again = after_error(bug, redelivered=True)
    assert again.settle is Settle.DEAD
    assert "failed again after a redelivery: KeyError" in again.reason


def test_names() -> None:
    assert dead_letter_queue("happy-end") == "happy-end.dead"
    assert unknown_job("j9") == Verdict(
        Settle.DEAD, "not a job of this gateway: unknown job id 'j9'"
    )


def test_a_message_of_several_parts_is_settled_by_its_worst() -> None:
    ack, dead, retry = Verdict(Settle.ACK), Verdict(Settle.DEAD, "d"), Verdict(Settle.RETRY, "r")
    assert worst([]) == ack
    assert worst([ack, dead, ack]) == dead
    assert worst([dead, retry, ack]) == retry
