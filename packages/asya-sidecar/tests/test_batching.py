"""Batching, pure: the limits in force, the prefetch, and one batch outcome split into per-item
outcomes that the ordinary decision settles one by one (no I/O)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from asya_protocol import (
    BatchLimits,
    BatchOkReply,
    ErrorReply,
    OkReply,
    child_id,
    decode_batch_reply,
    decode_envelope,
    encode_envelope,
)
from asya_sidecar import decision
from asya_sidecar.batching import (
    MAX_PREFETCH,
    BatchPlan,
    batch_plan,
    prefetch_for,
    split_outcome,
)
from asya_sidecar.decision import Outcome, Process, after_runtime, inspect
from asya_sidecar.settings import RetryPolicy, SidecarSettings

SETTINGS = SidecarSettings(actor="embed", redelivery_limit=3)
CTX = decision.RoutingContext.of(SETTINGS, envelope_mode=False)
LIMITS = BatchLimits(max_size=16, max_wait_ms=10.0)


def processes(n: int) -> list[Process]:
    out = []
    for i in range(n):
        doc = {"id": f"m-{i}", "route": {"steps": ["embed", "next"]}, "payload": {"i": i}}
        step = inspect(json.dumps(doc).encode(), CTX)
        assert isinstance(step, Process)
        out.append(step)
    return out


def reply(body: str) -> BatchOkReply | ErrorReply:
    decoded = decode_batch_reply(body.encode())
    assert isinstance(decoded, BatchOkReply | ErrorReply)
    return decoded


@pytest.mark.parametrize(
    ("limits", "caps", "expected"),
    [
        (None, {}, None),
        (LIMITS, {}, BatchPlan(16, 0.01, SETTINGS.max_frame_size - 16)),
        (LIMITS, {"batch_max_size": 4}, BatchPlan(4, 0.01, SETTINGS.max_frame_size - 16)),
        (LIMITS, {"batch_max_size": 64}, BatchPlan(16, 0.01, SETTINGS.max_frame_size - 16)),
        (LIMITS, {"batch_max_wait": 0.002}, BatchPlan(16, 0.002, SETTINGS.max_frame_size - 16)),
        (LIMITS, {"batch_max_wait": 5.0}, BatchPlan(16, 0.01, SETTINGS.max_frame_size - 16)),
        (LIMITS, {"batch_max_size": 1}, None),
    ],
)
def test_the_smaller_limit_applies(
    limits: BatchLimits | None, caps: dict[str, Any], expected: BatchPlan | None
) -> None:
    assert batch_plan(limits, replace(SETTINGS, **caps)) == expected


def test_prefetch_fills_every_batch() -> None:
    assert prefetch_for(None, 3) == 3
    assert prefetch_for(BatchPlan(8, 0.05, 1 << 20), 2) == 16
    assert prefetch_for(BatchPlan(10_000, 0.05, 1 << 20), 100) == MAX_PREFETCH


def test_all_ok_items_route_one_by_one() -> None:
    work = processes(3)
    outcomes = split_outcome(reply('{"status":"ok","results":[{"a":0},{"a":1},{"a":2}]}'), 3)
    decisions = [after_runtime(p, o, CTX) for p, o in zip(work, outcomes, strict=True)]
    assert [d.outcome for d in decisions] == [Outcome.FORWARDED] * 3
    for i, d in enumerate(decisions):
        [out] = d.publish
        assert out.routing_key == "next"
        assert out.envelope_id == f"m-{i}"
        assert json.loads(out.body)["payload"] == {"a": i}
        assert d.ack


def test_a_per_item_error_fails_that_item_alone() -> None:
    body = (
        '{"status":"ok","results":[1,null,3],'
        '"errors":{"1":{"error":"bad_item","message":"no","details":{"why":"x"}}}}'
    )
    work = processes(3)
    decisions = [
        after_runtime(p, o, CTX) for p, o in zip(work, split_outcome(reply(body), 3), strict=True)
    ]
    assert [d.outcome for d in decisions] == [
        Outcome.FORWARDED,
        Outcome.ERROR_END,
        Outcome.FORWARDED,
    ]
    failed = json.loads(decisions[1].publish[0].body)
    assert failed["id"] == "m-1"
    assert failed["payload"]["error"] == "bad_item"
    assert failed["payload"]["original_payload"] == {"i": 1}
    assert failed["payload"]["details"] == {"why": "x"}


def test_a_fan_out_item_fans_out_alone() -> None:
    work = processes(2)
    outcomes = split_outcome(reply('{"status":"ok","results":[["x","y"],"z"]}'), 2)
    fan, single = (after_runtime(p, o, CTX) for p, o in zip(work, outcomes, strict=True))
    assert fan.outcome is Outcome.FAN_OUT
    assert [o.envelope_id for o in fan.publish] == [child_id("m-0", 0), child_id("m-0", 1)]
    assert single.outcome is Outcome.FORWARDED


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ('{"error":"handler_error","message":"model crashed"}', "handler_error"),
        ('{"status":"ok","results":[1]}', "protocol_error"),
        ('{"status":"ok","results":[1,2,3,4]}', "protocol_error"),
        (
            '{"status":"ok","results":[1,2,3],"errors":{"7":{"error":"x","message":"y"}}}',
            "protocol_error",
        ),
    ],
)
def test_a_whole_batch_failure_is_every_items(outcome: str, code: str) -> None:
    work = processes(3)
    decisions = [
        after_runtime(p, o, CTX)
        for p, o in zip(work, split_outcome(reply(outcome), 3), strict=True)
    ]
    assert [d.outcome for d in decisions] == [Outcome.ERROR_END] * 3
    assert [d.error for d in decisions] == [code] * 3
    assert [json.loads(d.publish[0].body)["id"] for d in decisions] == ["m-0", "m-1", "m-2"]


def test_timeout_and_lost_runtime_apply_to_each_item() -> None:
    work = processes(2)
    timed_out = split_outcome(decision.RuntimeTimeout(1.0), 2)
    assert [after_runtime(p, o, CTX).error for p, o in zip(work, timed_out, strict=True)] == [
        "timeout",
        "timeout",
    ]
    lost = split_outcome(decision.RuntimeUnavailableOutcome("gone"), 2)
    decisions = [after_runtime(p, o, CTX) for p, o in zip(work, lost, strict=True)]
    assert all(d.outcome is Outcome.REQUEUE and not d.ack for d in decisions)


def test_retries_are_counted_per_item() -> None:
    retrying = replace(CTX, retry=RetryPolicy(max_attempts=2, codes=frozenset({"flaky"})))
    work = processes(2)
    second = decode_envelope(encode_envelope(work[1].envelope))
    work[1] = Process(second, work[1].request, attempt=2)  # already retried once
    error = ErrorReply(error="flaky", message="try again")
    decisions = [
        after_runtime(p, o, retrying) for p, o in zip(work, split_outcome(error, 2), strict=True)
    ]
    assert [d.outcome for d in decisions] == [Outcome.RETRY, Outcome.ERROR_END]


def test_split_keeps_ok_replies_raw() -> None:
    [item] = split_outcome(reply('{"status":"ok","results":[{"deep":[1]}]}'), 1)
    assert isinstance(item, OkReply)
    assert item.result_value() == {"deep": [1]}
