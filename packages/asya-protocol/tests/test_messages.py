from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from asya_protocol import (
    ERROR_CODE_DESCRIPTIONS,
    ControlRequest,
    ErrorCode,
    ErrorReply,
    OkReply,
    PartialReply,
    ProgressReply,
    ProtocolError,
    decode_control,
    decode_reply,
    encode_control,
    encode_error,
    encode_ok,
    encode_ok_raw,
    encode_partial,
    encode_partial_raw,
    encode_progress,
    is_control_frame,
    validate_error_code,
)
from asya_protocol.vectors import load_vectors

KINDS = {"ok": OkReply, "error": ErrorReply, "progress": ProgressReply, "partial": PartialReply}


@pytest.mark.parametrize("vector", load_vectors("replies"), ids=lambda v: v["name"])
def test_reply_vector(vector: dict[str, Any]) -> None:
    body = vector["body"].encode()
    if vector["kind"] == "invalid":
        with pytest.raises(ProtocolError):
            decode_reply(body)
        return
    reply = decode_reply(body)
    assert isinstance(reply, KINDS[vector["kind"]])
    if isinstance(reply, OkReply):
        fan = reply.fan_out()
        expected = vector["fan_out"]
        if expected is None:
            assert fan is None
        else:
            assert fan is not None
            assert [json.loads(bytes(r)) for r in fan] == [json.loads(e) for e in expected]
    if isinstance(reply, ErrorReply):
        assert reply.error == vector["error"]
        assert reply.retryable == vector.get("retryable")
    if isinstance(reply, PartialReply):
        assert reply.value() == json.loads(vector["partial"])


def test_partial_frames_roundtrip() -> None:
    for value in ["Hel", {"token": 1}, [1, 2], None, 0]:
        reply = decode_reply(encode_partial(value))
        assert isinstance(reply, PartialReply)
        assert reply.value() == value
    raw = decode_reply(encode_partial_raw(b'"lo"'))
    assert isinstance(raw, PartialReply)
    assert bytes(raw.partial) == b'"lo"'
    with pytest.raises(TypeError):
        encode_partial(object())


def test_encoders_roundtrip() -> None:
    ok = decode_reply(encode_ok({"a": [1, 2]}))
    assert isinstance(ok, OkReply)
    assert ok.result_value() == {"a": [1, 2]}
    raw = decode_reply(encode_ok_raw(b'{"b": 2}'))
    assert isinstance(raw, OkReply)
    assert raw.result_value() == {"b": 2}
    err = decode_reply(encode_error("x_y", "m", retryable=False, details={"type": "E"}))
    assert err == ErrorReply(error="x_y", message="m", retryable=False, details={"type": "E"})
    prog = decode_reply(encode_progress(0.25, "quarter"))
    assert prog == ProgressReply(progress=0.25, message="quarter")


def test_encode_ok_refuses_unserialisable() -> None:
    with pytest.raises((TypeError, msgspec.EncodeError)):
        encode_ok(object())


def test_progress_range_is_checked() -> None:
    with pytest.raises(ValueError, match=r"0\.\.1"):
        encode_progress(2.0)


def test_every_error_code_is_documented() -> None:
    assert set(ERROR_CODE_DESCRIPTIONS) == set(ErrorCode)
    for code in ErrorCode:
        assert validate_error_code(code.value) == code.value


@pytest.mark.parametrize("code", ["", "Upper", "with space", "1x", "x" * 65])
def test_invalid_error_codes(code: str) -> None:
    with pytest.raises(ProtocolError):
        validate_error_code(code)


def test_control_frames_are_never_valid_json() -> None:
    frame = encode_control(ControlRequest(op="hello", features=("progress",)))
    assert is_control_frame(frame)
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(frame)
    assert decode_control(frame) == ControlRequest(op="hello", features=("progress",))
    assert not is_control_frame(b'{"op":"hello"}')


def test_bad_control_frames() -> None:
    with pytest.raises(ProtocolError, match="not a control frame"):
        decode_control(b'{"op":"ping"}')
    with pytest.raises(ProtocolError, match="invalid control frame"):
        decode_control(b'!{"op":"reboot"}')


def test_step_events_one_or_a_batch() -> None:
    from asya_protocol import (
        EventError,
        EventType,
        StepEvent,
        decode_events,
        encode_event,
        encode_event_batch,
    )

    events = [
        StepEvent(type=EventType.DONE, actor="a", time=float(i), id=f"m{i}") for i in range(3)
    ]
    one = encode_event(events[0])
    assert decode_events(one) == [events[0]]
    batch = encode_event_batch([encode_event(e) for e in events])
    assert batch.startswith(b"[")
    assert decode_events(batch) == events
    assert decode_events(b" []") == []
    for bad in (b"[{}]", b"[1,2]", b"{", b"[{"):
        with pytest.raises(EventError):
            decode_events(bad)
