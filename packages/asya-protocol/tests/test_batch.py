"""The batch extension: request and reply shapes, their vectors, and the per-item split."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from asya_protocol import (
    BatchLimits,
    BatchOkReply,
    EnvelopeError,
    ErrorReply,
    Feature,
    HelloResult,
    OkReply,
    ProgressReply,
    ProtocolError,
    decode_batch_reply,
    decode_batch_request,
    encode_batch_ok,
    encode_batch_request,
    encode_error,
    split_batch_reply,
)
from asya_protocol.vectors import load_vectors

VECTORS = load_vectors("batch")


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if v["kind"] == "request"], ids=lambda v: v["name"]
)
def test_request_vector(vector: dict[str, Any]) -> None:
    body = vector["body"].encode()
    if "error" in vector:
        expected = EnvelopeError if vector["error"] == "parse_error" else ProtocolError
        with pytest.raises(expected):
            decode_batch_request(body)
        if expected is ProtocolError:
            with pytest.raises(ProtocolError) as info:
                decode_batch_request(body)
            assert not isinstance(info.value, EnvelopeError)
        return
    items = [item.encode() for item in vector["items"]]
    assert json.loads(encode_batch_request(items)) == json.loads(body)
    assert decode_batch_request(body) == [json.loads(i) for i in items]


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if v["kind"] == "reply"], ids=lambda v: v["name"]
)
def test_reply_vector(vector: dict[str, Any]) -> None:
    body = vector["body"].encode()
    if vector.get("invalid"):
        with pytest.raises(ProtocolError):
            decode_batch_reply(body)
        return
    reply = decode_batch_reply(body)
    if vector.get("progress"):
        assert isinstance(reply, ProgressReply)
        return
    assert isinstance(reply, BatchOkReply | ErrorReply)
    items = split_batch_reply(reply, vector["size"])
    assert len(items) == vector["size"]
    for got, want in zip(items, vector["items"], strict=True):
        if want["kind"] == "ok":
            assert isinstance(got, OkReply)
            assert json.loads(bytes(got.result)) == json.loads(want["result"])
        else:
            assert isinstance(got, ErrorReply)
            assert got.error == want["error"]


def test_encode_batch_ok_roundtrip() -> None:
    body = encode_batch_ok([b'{"a":1}', None, b"[1,2]"], {1: encode_error("bad_item", "no")})
    reply = decode_batch_reply(body)
    assert isinstance(reply, BatchOkReply)
    first, second, third = split_batch_reply(reply, 3)
    assert isinstance(first, OkReply)
    assert first.result_value() == {"a": 1}
    assert isinstance(second, ErrorReply)
    assert second.error == "bad_item"
    assert isinstance(third, OkReply)
    assert third.fan_out() is not None
    assert json.loads(encode_batch_ok([b"1"], {})) == {"status": "ok", "results": [1]}


def test_depth_limit_applies_to_each_item() -> None:
    deep = b"[" * 128 + b"]" * 128
    assert decode_batch_request(b'{"batch":[' + deep + b"]}") == [json.loads(deep)]
    with pytest.raises(EnvelopeError, match="batch item nests 129"):
        decode_batch_request(b'{"batch":[[' + deep + b"]]}")
    with pytest.raises(EnvelopeError, match="runtime result nests 129"):
        decode_batch_reply(b'{"status":"ok","results":[[' + deep + b"]]}")


def test_hello_carries_the_limits() -> None:
    hello = HelloResult(
        protocol=1,
        features=(Feature.BATCH.value,),
        batch=BatchLimits(max_size=16, max_wait_ms=10.0),
    )
    decoded = msgspec.json.decode(msgspec.json.encode(hello), type=HelloResult)
    assert decoded.batch == BatchLimits(max_size=16, max_wait_ms=10.0)
    base = msgspec.json.decode(b'{"protocol":1,"features":["progress"]}', type=HelloResult)
    assert base.batch is None


def test_a_partial_frame_is_not_part_of_a_batch_exchange() -> None:
    with pytest.raises(ProtocolError, match="partial"):
        decode_batch_reply(b'{"status":"partial","partial":"x"}')
