"""The routing decision, exhaustively, with no I/O."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from asya_protocol import (
    MAX_ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    ErrorReply,
    OkReply,
    child_id,
    decode_envelope,
    encode_envelope,
    json_depth,
)
from asya_sidecar.decision import (
    Decision,
    Outcome,
    Process,
    RoutingContext,
    RuntimeTimeout,
    RuntimeUnavailableOutcome,
    after_runtime,
    inspect,
    inspect_failed,
    unroutable,
)
from asya_sidecar.retries import ATTEMPT_HEADER, retry_bucket, retry_queue_name
from asya_sidecar.settings import RetryPolicy

CTX = RoutingContext(
    actor="inference",
    happy_end="happy-end",
    error_end="error-end",
    retry=RetryPolicy(),
    redelivery_limit=3,
)
RETRYING = RoutingContext(
    actor="inference",
    happy_end="happy-end",
    error_end="error-end",
    retry=RetryPolicy(
        max_attempts=3, base_delay=2.0, max_delay=60.0, jitter=0.5, codes=frozenset({"flaky"})
    ),
    redelivery_limit=3,
)


def body(current: int = 1, **extra: Any) -> bytes:
    doc = {
        "id": "m-1",
        "route": {"steps": ["preprocess", "inference", "postprocess"], "current": current},
        "payload": {"tokens": [1, 2, 3]},
        "headers": {"traceparent": "00-abc-def-01"},
        "x-custom": [1],
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def process(raw: bytes = b"", ctx: RoutingContext = CTX) -> Process:
    result = inspect(raw or body(), ctx)
    assert isinstance(result, Process)
    return result


def published(decision: Decision) -> list[tuple[str, dict[str, Any]]]:
    return [(o.routing_key, json.loads(o.body)) for o in decision.publish]


def ok(value: Any) -> OkReply:
    return OkReply(result=json.dumps(value).encode())  # type: ignore[arg-type]


# --- inspect ------------------------------------------------------------------------------------


def test_valid_delivery_goes_to_runtime_with_raw_payload() -> None:
    p = process()
    assert p.request == b'{"tokens": [1, 2, 3]}'
    assert p.attempt == 1
    assert p.envelope.id == "m-1"


def test_missing_id_is_assigned_once() -> None:
    raw = json.dumps({"route": {"steps": ["inference"]}, "payload": 1}).encode()
    p = process(raw)
    assert p.envelope.id
    out = published(after_runtime(p, ok(2), CTX))
    assert out[0][1]["id"] == p.envelope.id


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json at all \xff", "parse_error"),
        (b'{"route": {"steps": ["inference"]}}', "parse_error"),
        (b'{"route": {"steps": []}, "payload": 1}', "route_error"),
        (b'{"route": {"steps": ["inference"], "current": 9}, "payload": 1}', "route_error"),
    ],
)
def test_unparseable_goes_to_error_end_with_original_body(raw: bytes, code: str) -> None:
    decision = inspect(raw, CTX)
    assert isinstance(decision, Decision)
    assert decision.outcome is Outcome.ERROR_END
    assert decision.ack
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == code
    assert env["payload"]["step"] == "inference"
    assert env["payload"]["original_body"] == raw.decode("utf-8", errors="replace")
    assert env["route"] == {"steps": ["inference"], "current": 0}


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def raw_envelope(payload: bytes, extra: bytes = b"") -> bytes:
    return b'{"id":"m-1","route":{"steps":["inference"]},"payload":' + payload + extra + b"}"


def assert_publishable(decision: Decision) -> None:
    """Every body is valid UTF-8 JSON that the next reader can decode again."""
    for out in decision.publish:
        out.body.decode("utf-8")
        decode_envelope(out.body)


@pytest.mark.parametrize(
    "raw",
    [
        raw_envelope(deep(1000)),
        raw_envelope(b"{}", b',"x-deep":' + deep(1000)),
        raw_envelope(b"{}", b',"x-deep":' + deep(MAX_ENVELOPE_DEPTH)),
    ],
    ids=["payload", "unknown-field", "unknown-field-one-too-deep"],
)
def test_too_deep_envelope_is_a_parse_error_once(raw: bytes) -> None:
    decision = inspect(raw, CTX, redelivered=True, redeliveries=2)
    assert isinstance(decision, Decision)
    assert (decision.outcome, decision.ack) == (Outcome.ERROR_END, True)
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "parse_error"
    assert f"the limit is {MAX_ENVELOPE_DEPTH}" in env["payload"]["message"]
    assert env["payload"]["original_body"] == raw.decode()
    assert_publishable(decision)


def test_payload_one_level_too_deep_keeps_the_envelope() -> None:
    raw = raw_envelope(deep(MAX_JSON_DEPTH + 1), b',"x-k":1')
    decision = inspect(raw, CTX)
    assert isinstance(decision, Decision)
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["id"] == "m-1"
    assert env["x-k"] == 1
    assert env["payload"]["error"] == "parse_error"
    assert env["payload"]["message"] == (
        f"payload nests {MAX_JSON_DEPTH + 1} levels deep; the limit is {MAX_JSON_DEPTH}"
    )
    assert env["payload"]["original_body"] == deep(MAX_JSON_DEPTH + 1).decode()
    assert_publishable(decision)


def test_payload_and_unknown_field_at_their_limits_are_processed() -> None:
    raw = raw_envelope(deep(MAX_JSON_DEPTH), b',"x-deep":' + deep(MAX_ENVELOPE_DEPTH - 1))
    p = process(raw)
    assert p.request == deep(MAX_JSON_DEPTH)
    failed = after_runtime(p, ErrorReply(error="boom", message="no"), CTX)
    assert json_depth(failed.publish[0].body) == MAX_ENVELOPE_DEPTH
    assert_publishable(failed)


def test_invalid_utf8_in_a_payload_is_a_parse_error_with_the_bytes_replaced() -> None:
    raw = raw_envelope(b'{"text": "caf\xe9 \xff"}')
    decision = inspect(raw, CTX)
    assert isinstance(decision, Decision)
    [(_, env)] = published(decision)
    assert env["payload"]["error"] == "parse_error"
    assert "not valid UTF-8" in env["payload"]["message"]
    assert '"caf\ufffd \ufffd"' in env["payload"]["original_body"]
    assert_publishable(decision)


def test_a_result_refused_by_the_runtime_client_ends_with_the_input() -> None:
    # What the runtime client makes of a result that is not UTF-8 or is too deep.
    refused = ErrorReply(error="parse_error", message="runtime result refused: ...")
    decision = after_runtime(process(), refused, CTX)
    [(queue, env)] = published(decision)
    assert (queue, env["payload"]["error"]) == ("error-end", "parse_error")
    assert env["payload"]["original_payload"] == {"tokens": [1, 2, 3]}


def test_unexpected_exception_while_inspecting_is_counted_on_the_raw_body() -> None:
    raw = b'{"route": "whatever"}'
    decision = inspect_failed(raw, RecursionError("too deep"), CTX, redeliveries=1)
    assert decision.outcome is Outcome.RECOUNTED
    assert decision.ack
    [out] = decision.publish
    assert (out.routing_key, out.body, out.redeliveries) == ("inference", raw, 2)
    assert "RecursionError: too deep" in decision.reason


def test_unexpected_exception_past_the_limit_goes_to_error_end() -> None:
    raw = b'{"route": "whatever", "x": "\xff"}'
    decision = inspect_failed(raw, RecursionError("too deep"), CTX, redeliveries=3)
    assert decision.outcome is Outcome.ERROR_END
    assert decision.error == "redelivery_limit"
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "redelivery_limit"
    assert "failed 4 times (limit 3): RecursionError: too deep" in env["payload"]["message"]
    assert env["payload"]["details"] == {"exception": "RecursionError"}
    assert env["payload"]["original_body"] == raw.decode("utf-8", errors="replace")
    assert_publishable(decision)


def test_inspect_counts_an_exception_instead_of_raising_it() -> None:
    # A failure inside inspect itself: building the error-end for this body raises, because
    # the actor's name breaks the route rules (settings refuse it; here it stands for a bug).
    broken = RoutingContext(
        actor="amq.reserved",
        happy_end="happy-end",
        error_end="error-end",
        retry=RetryPolicy(),
        redelivery_limit=3,
    )
    decision = inspect(b"not json", broken, redelivered=True, redeliveries=1)
    assert isinstance(decision, Decision)
    assert decision.outcome is Outcome.RECOUNTED
    assert [(o.routing_key, o.body, o.redeliveries) for o in decision.publish] == [
        ("amq.reserved", b"not json", 2)
    ]
    assert "RouteError" in decision.reason


@pytest.mark.parametrize("current", [0, 2, 3])
def test_route_not_pointing_here_is_a_route_error(current: int) -> None:
    decision = inspect(body(current), CTX)
    assert isinstance(decision, Decision)
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "route_error"
    assert env["payload"]["step"] == "inference"
    assert env["payload"]["original_payload"] == {"tokens": [1, 2, 3]}
    assert env["route"]["current"] == current
    assert env["id"] == "m-1"
    assert env["x-custom"] == [1]


def test_redelivery_is_counted_by_republishing() -> None:
    decision = inspect(body(), CTX, redelivered=True, redeliveries=1)
    assert isinstance(decision, Decision)
    assert decision.outcome is Outcome.RECOUNTED
    [out] = decision.publish
    assert out.routing_key == "inference"
    assert out.redeliveries == 2
    assert json.loads(out.body)["payload"] == {"tokens": [1, 2, 3]}
    assert decision.ack


def test_redelivery_limit_ends_in_error_end() -> None:
    decision = inspect(body(), CTX, redelivered=True, redeliveries=3)
    assert isinstance(decision, Decision)
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "redelivery_limit"
    assert env["payload"]["attempts"] == 4


def test_envelope_mode_sends_the_whole_envelope() -> None:
    ctx = RoutingContext(**{**CTX.__dict__, "envelope_mode": True})
    p = process(ctx=ctx)
    assert json.loads(p.request)["route"]["current"] == 1
    assert json.loads(p.request)["id"] == "m-1"


# --- after_runtime: success -------------------------------------------------------------------


def test_success_advances_and_forwards_keeping_everything() -> None:
    decision = after_runtime(process(), ok({"prediction": "greeting"}), CTX)
    assert decision.outcome is Outcome.FORWARDED
    [(queue, env)] = published(decision)
    assert queue == "postprocess"
    assert env == {
        "id": "m-1",
        "route": {"steps": ["preprocess", "inference", "postprocess"], "current": 2},
        "payload": {"prediction": "greeting"},
        "headers": {"traceparent": "00-abc-def-01"},
        "x-custom": [1],
    }


def test_last_step_goes_to_happy_end() -> None:
    raw = body(current=0, route={"steps": ["inference"], "current": 0})
    decision = after_runtime(process(raw), ok({"result": "done"}), CTX)
    assert decision.outcome is Outcome.HAPPY_END
    [(queue, env)] = published(decision)
    assert queue == "happy-end"
    assert env["route"]["current"] == 1


def test_fan_out_children() -> None:
    decision = after_runtime(process(), ok([{"chunk": 1}, {"chunk": 2}, {"chunk": 3}]), CTX)
    assert decision.outcome is Outcome.FAN_OUT
    out = published(decision)
    assert [q for q, _ in out] == ["postprocess"] * 3
    assert [e["payload"] for _, e in out] == [{"chunk": 1}, {"chunk": 2}, {"chunk": 3}]
    assert all(e["parent_id"] == "m-1" for _, e in out)
    assert len({e["id"] for _, e in out} | {"m-1"}) == 4
    assert all(e["headers"] == {"traceparent": "00-abc-def-01"} for _, e in out)


def test_fan_out_child_ids_repeat_for_a_redelivered_parent() -> None:
    result = ok([{"chunk": 1}, {"chunk": 2}])
    first = after_runtime(process(), result, CTX)
    again = after_runtime(process(), result, CTX)
    ids = [o.envelope_id for o in first.publish]
    assert ids == [o.envelope_id for o in again.publish]
    assert ids == [child_id("m-1", 0), child_id("m-1", 1)]
    assert [e["id"] for _, e in published(first)] == ids


def test_empty_fan_out_publishes_nothing_and_acks() -> None:
    decision = after_runtime(process(), ok([]), CTX)
    assert decision.outcome is Outcome.DROPPED
    assert decision.publish == ()
    assert decision.ack


def test_success_clears_the_attempt_header() -> None:
    raw = body(headers={"traceparent": "t", ATTEMPT_HEADER: "2"})
    decision = after_runtime(process(raw, RETRYING), ok(1), RETRYING)
    [(_, env)] = published(decision)
    assert env["headers"] == {"traceparent": "t"}


# --- after_runtime: failures ------------------------------------------------------------------


def test_runtime_error_goes_to_error_end_with_details() -> None:
    reply = ErrorReply(error="handler_error", message="boom", details={"type": "KeyError"})
    decision = after_runtime(process(), reply, CTX)
    assert decision.outcome is Outcome.ERROR_END
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"] == {
        "error": "handler_error",
        "message": "boom",
        "step": "inference",
        "original_payload": {"tokens": [1, 2, 3]},
        "details": {"type": "KeyError"},
    }
    assert env["route"]["current"] == 1
    assert env["id"] == "m-1"
    assert env["headers"] == {"traceparent": "00-abc-def-01"}
    assert env["x-custom"] == [1]


def test_timeout_goes_to_error_end() -> None:
    decision = after_runtime(process(), RuntimeTimeout(5.0), CTX)
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "timeout"
    assert "5s" in env["payload"]["message"]


def test_runtime_unavailable_is_not_acked() -> None:
    decision = after_runtime(process(), RuntimeUnavailableOutcome("gone"), CTX)
    assert decision.outcome is Outcome.REQUEUE
    assert not decision.ack
    assert decision.publish == ()


def test_a_runtime_not_ready_is_not_the_messages_fault() -> None:
    """A runtime with a stuck handler refuses work with not_ready: the message goes back, even
    with retries on (a retry would be charged to the message)."""
    reply = ErrorReply(error="not_ready", message="1 of 1 slot(s) held", retryable=True)
    ctx = replace(CTX, retry=RetryPolicy(max_attempts=5, codes=frozenset({"not_ready"})))
    decision = after_runtime(process(), reply, ctx)
    assert decision.outcome is Outcome.REQUEUE
    assert not decision.ack
    assert decision.publish == ()
    assert (decision.error, decision.reason) == ("not_ready", "1 of 1 slot(s) held")


def test_no_retry_by_default_even_when_retryable() -> None:
    reply = ErrorReply(error="busy", message="later", retryable=True)
    assert after_runtime(process(), reply, CTX).outcome is Outcome.ERROR_END


@pytest.mark.parametrize(
    ("reply", "retried"),
    [
        (ErrorReply(error="busy", message="m", retryable=True), True),
        (ErrorReply(error="busy", message="m", retryable=False), False),
        (ErrorReply(error="busy", message="m"), False),
        (ErrorReply(error="flaky", message="m"), True),
        (ErrorReply(error="flaky", message="m", retryable=False), False),
    ],
)
def test_retry_policy(reply: ErrorReply, retried: bool) -> None:
    decision = after_runtime(process(ctx=RETRYING), reply, RETRYING, random_unit=0.5)
    assert (decision.outcome is Outcome.RETRY) is retried


def test_retry_goes_to_a_delay_queue_with_backoff_and_jitter() -> None:
    reply = ErrorReply(error="busy", message="m", retryable=True)
    first = after_runtime(process(ctx=RETRYING), reply, RETRYING, random_unit=0.5)
    [out] = first.publish
    assert out.delay_ms == 2000  # base 2 s, jitter factor 1.0 at random_unit 0.5
    assert out.routing_key == retry_queue_name("inference", 2000) == "asya-retry.inference.2000"
    env = json.loads(out.body)
    assert env["headers"][ATTEMPT_HEADER] == "2"
    assert env["route"]["current"] == 1
    assert env["payload"] == {"tokens": [1, 2, 3]}
    low = after_runtime(process(ctx=RETRYING), reply, RETRYING, random_unit=0.0)
    high = after_runtime(process(ctx=RETRYING), reply, RETRYING, random_unit=0.999)
    assert low.publish[0].delay_ms == 1000  # 2 s * (1 - 0.5)
    assert 2990 < (high.publish[0].delay_ms or 0) <= 3000  # 2 s * (1 + 0.5)


def test_retry_exhausted_goes_to_error_end_with_attempts() -> None:
    raw = body(headers={ATTEMPT_HEADER: "3"})
    reply = ErrorReply(error="busy", message="still busy", retryable=True)
    decision = after_runtime(process(raw, RETRYING), reply, RETRYING)
    assert decision.outcome is Outcome.ERROR_END
    [(_, env)] = published(decision)
    assert env["payload"]["attempts"] == 3
    assert ATTEMPT_HEADER not in env.get("headers", {})


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=20, base_delay=1.0, max_delay=10.0, jitter=0.0)
    assert [policy.delay(a, 0.5) for a in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize(("delay", "bucket"), [(1, 1000), (1000, 1000), (1001, 2000), (5000, 8000)])
def test_retry_buckets(delay: int, bucket: int) -> None:
    assert retry_bucket(delay) == bucket


def test_unroutable_output_sends_input_to_error_end() -> None:
    decision = unroutable(process(), CTX, "postprocess")
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "unroutable"
    assert env["payload"]["details"] == {"destination": "postprocess"}
    assert env["payload"]["original_payload"] == {"tokens": [1, 2, 3]}


# --- envelope mode ----------------------------------------------------------------------------

ENV_CTX = RoutingContext(**{**CTX.__dict__, "envelope_mode": True})


def test_envelope_mode_rewrites_remaining_route() -> None:
    p = process(ctx=ENV_CTX)
    returned = json.loads(p.request)
    returned["route"]["steps"] = ["preprocess", "inference", "review", "publish"]
    returned["headers"]["routed"] = "yes"
    returned["payload"] = {"ok": True}
    decision = after_runtime(p, ok(returned), ENV_CTX)
    [(queue, env)] = published(decision)
    assert queue == "review"
    assert env["route"] == {"steps": ["preprocess", "inference", "review", "publish"], "current": 2}
    assert env["headers"]["routed"] == "yes"
    assert env["id"] == "m-1"


def test_envelope_mode_cannot_rewrite_the_past() -> None:
    p = process(ctx=ENV_CTX)
    returned = json.loads(p.request)
    returned["route"]["steps"][0] = "forged"
    decision = after_runtime(p, ok(returned), ENV_CTX)
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "route_error"


def test_envelope_mode_invalid_envelope() -> None:
    decision = after_runtime(process(ctx=ENV_CTX), ok({"no": "route"}), ENV_CTX)
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "route_error"


def test_envelope_mode_fan_out() -> None:
    p = process(ctx=ENV_CTX)
    one = json.loads(p.request)
    two = json.loads(p.request)
    two["route"]["steps"] = ["preprocess", "inference"]
    decision = after_runtime(p, ok([one, two]), ENV_CTX)
    assert decision.outcome is Outcome.FAN_OUT
    out = published(decision)
    assert [q for q, _ in out] == ["postprocess", "happy-end"]
    assert all(e["parent_id"] == "m-1" for _, e in out)
    # The handler's envelopes carried the parent's id; the children get the derived ones.
    assert [e["id"] for _, e in out] == [child_id("m-1", 0), child_id("m-1", 1)]


def test_a_reply_over_the_frame_limit_is_never_retried() -> None:
    """The runtime client turns an oversized reply into frame_too_large, retryable=False: one
    run, then error-end, even when the policy lists the code."""
    policy = RetryPolicy(max_attempts=3, codes=frozenset({"frame_too_large"}))
    ctx = RoutingContext(**{**RETRYING.__dict__, "retry": policy})
    reply = ErrorReply(
        error="frame_too_large",
        message="too big",
        retryable=False,
        details={"size": 9000, "limit": 4096},
    )
    decision = after_runtime(process(ctx=ctx), reply, ctx)
    assert decision.outcome is Outcome.ERROR_END
    [(queue, env)] = published(decision)
    assert queue == "error-end"
    assert env["payload"]["error"] == "frame_too_large"
    assert env["payload"]["details"] == {"size": 9000, "limit": 4096}


def test_encoded_error_end_is_a_valid_envelope_again() -> None:
    from asya_protocol import decode_envelope

    decision = after_runtime(process(), ErrorReply(error="e", message="m"), CTX)
    env = decode_envelope(decision.publish[0].body)
    assert encode_envelope(env) == decision.publish[0].body
