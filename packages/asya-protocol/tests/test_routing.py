from __future__ import annotations

import json
import uuid

import pytest

from asya_protocol import (
    CHILD_ID_NAMESPACE,
    ErrorCode,
    child_id,
    decode_envelope,
    encode_envelope,
    error_end_envelope,
    fan_out,
    unparseable_envelope,
)

SEED = (
    b'{"id":"p-1","route":{"steps":["split","inference"],"current":0},'
    b'"payload":{"text":"Hello world"},"headers":{"h":"v"},"x-extra":1}'
)


def test_seed_fan_out_children() -> None:
    parent = decode_envelope(SEED)
    children = fan_out(parent, [b'{"chunk":1,"text":"Hello"}', b'{"chunk":2,"text":"world"}'])
    assert len(children) == 2
    ids = {c.id for c in children}
    assert len(ids) == 2
    assert "p-1" not in ids
    for n, child in enumerate(children, start=1):
        doc = json.loads(encode_envelope(child))
        assert doc["parent_id"] == "p-1"
        assert doc["route"] == {"steps": ["split", "inference"], "current": 1}
        assert doc["payload"]["chunk"] == n
        assert doc["headers"] == {"h": "v"}
        assert doc["x-extra"] == 1


def test_fan_out_child_ids_are_derived_from_the_parent_id_and_index() -> None:
    parent = decode_envelope(SEED)
    results = [b'{"chunk":1}', b'{"chunk":2}', b'{"chunk":3}']
    first = [c.id for c in fan_out(parent, results)]
    again = [c.id for c in fan_out(decode_envelope(SEED), results)]
    assert first == again  # a redelivered parent republishes the same children
    # Fixed values, so a router in another language can check its own derivation.
    assert first[:2] == [
        "c2fbc0f8-0e65-5b4b-a06b-3d5a20bc01d5",
        "349ea50f-4265-5ef8-ba9b-66da242188a9",
    ]
    assert first == [child_id("p-1", i) for i in range(3)]
    assert len(set(first)) == 3
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://asya.sh/ns/fan-out-child") == CHILD_ID_NAMESPACE
    assert child_id("p-1", 0) == str(uuid.uuid5(CHILD_ID_NAMESPACE, "p-1:0"))
    # The ids depend on the payloads' position, not their content; other parents differ.
    assert [c.id for c in fan_out(parent, [b"1", b"1", b"1"])] == first
    other = decode_envelope(SEED.replace(b'"p-1"', b'"p-2"'))
    assert not set(first) & {c.id for c in fan_out(other, results)}
    with pytest.raises(ValueError, match="index"):
        child_id("p-1", -1)


def test_fan_out_needs_parent_id() -> None:
    parent = decode_envelope(b'{"route":{"steps":["a"]},"payload":1}')
    with pytest.raises(ValueError, match="id"):
        fan_out(parent, [b"1"])
    assert fan_out(parent.ensure_id(), []) == []


def test_error_end_envelope_keeps_route_and_metadata() -> None:
    env = decode_envelope(SEED)
    failed = error_end_envelope(
        env, error=ErrorCode.HANDLER_ERROR, message="boom", details={"type": "ValueError"}
    )
    doc = json.loads(encode_envelope(failed))
    assert doc["id"] == "p-1"
    assert doc["route"] == {"steps": ["split", "inference"], "current": 0}
    assert doc["headers"] == {"h": "v"}
    assert doc["x-extra"] == 1
    assert doc["payload"] == {
        "error": "handler_error",
        "message": "boom",
        "step": "split",
        "original_payload": {"text": "Hello world"},
        "details": {"type": "ValueError"},
    }


def test_unparseable_body_goes_out_as_text() -> None:
    env = unparseable_envelope(
        b"\xffnot json", step="split", error=ErrorCode.PARSE_ERROR, message="bad"
    )
    doc = json.loads(encode_envelope(env))
    assert doc["route"] == {"steps": ["split"], "current": 0}
    assert doc["id"]
    assert doc["payload"]["original_body"] == "\ufffdnot json"
    assert doc["payload"]["error"] == "parse_error"
    assert doc["payload"]["step"] == "split"
