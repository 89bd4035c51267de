from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asya_protocol import (
    Envelope,
    EnvelopeError,
    Route,
    RouteError,
    advance,
    decode_envelope,
    destination,
    encode_envelope,
    validate_queue_name,
)
from asya_protocol.vectors import load_vectors

ENVELOPE_VECTORS = load_vectors("envelopes")


@pytest.mark.parametrize("vector", ENVELOPE_VECTORS, ids=lambda v: v["name"])
def test_envelope_vector(vector: dict[str, Any]) -> None:
    body = vector["input"].encode()
    if not vector["valid"]:
        expected = RouteError if vector["error_kind"] == "route" else EnvelopeError
        with pytest.raises(expected) as info:
            decode_envelope(body)
        if vector["error_kind"] == "parse":
            assert not isinstance(info.value, RouteError)
        return
    envelope = decode_envelope(body)
    if "step_result" not in vector:
        return
    after = advance(envelope, vector["step_result"].encode())
    expected = vector["expected_after_step"]
    assert destination(after) == expected["destination"]
    assert json.loads(encode_envelope(after)) == expected["envelope"]


def test_unknown_fields_survive_byte_for_byte() -> None:
    body = b'{"route":{"steps":["a"]},"payload":{"k":1},"x-new":{"deep": [1, 2.50, "s"]},"z":null}'
    out = encode_envelope(decode_envelope(body))
    assert b'"x-new":{"deep": [1, 2.50, "s"]}' in out
    assert b'"z":null' in out


def test_payload_is_not_decoded_or_reformatted() -> None:
    body = b'{"route":{"steps":["a","b"]},"payload":{ "spaced" :  1.000 }}'
    out = encode_envelope(advance(decode_envelope(body), b"[ 1 ]"))
    assert b'"payload":[ 1 ]' in out
    assert decode_envelope(body).payload_value() == {"spaced": 1.0}


def test_decode_rejects_bad_header_values_with_clear_message() -> None:
    with pytest.raises(EnvelopeError, match="headers"):
        decode_envelope(b'{"route":{"steps":["a"]},"payload":1,"headers":{"n":1}}')


def test_null_optional_fields_are_accepted() -> None:
    env = decode_envelope(b'{"id":null,"route":{"steps":["a"]},"payload":1,"headers":null}')
    assert env.id is None
    assert env.headers == {}


def test_route_helpers() -> None:
    route = Route(steps=("a", "b"))
    assert route.current_step == "a"
    assert not route.exhausted
    last = route.advance().advance()
    assert last.exhausted
    assert last.current_step is None
    with pytest.raises(RouteError, match="exhausted"):
        last.advance()


def test_ensure_id_assigns_once() -> None:
    env = decode_envelope(b'{"route":{"steps":["a"]},"payload":1}')
    with_id = env.ensure_id()
    assert with_id.id
    assert with_id.ensure_id() is with_id


def test_with_payload_encodes_value() -> None:
    env = decode_envelope(b'{"route":{"steps":["a"]},"payload":1}').with_payload({"x": [1]})
    assert env.payload_value() == {"x": [1]}


@pytest.mark.parametrize("name", ["a", "A-b_c.d:e", "x" * 255, "0start"])
def test_valid_queue_names(name: str) -> None:
    assert validate_queue_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a b", "a#", "a*", "amq.x", "x" * 256, "é"])
def test_invalid_queue_names(name: str) -> None:
    with pytest.raises(RouteError):
        validate_queue_name(name)


_step = st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_extra_key = st.text(min_size=1, max_size=10).filter(
    lambda k: k not in {"id", "route", "payload", "headers", "parent_id"}
)


@given(
    steps=st.lists(_step, min_size=1, max_size=5),
    data=st.data(),
    payload=_json,
    headers=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    extra=st.dictionaries(_extra_key, _json, max_size=3),
    envelope_id=st.none() | st.uuids().map(str),
)
def test_roundtrip_any_envelope(
    steps: list[str],
    data: st.DataObject,
    payload: Any,
    headers: dict[str, str],
    extra: dict[str, Any],
    envelope_id: str | None,
) -> None:
    current = data.draw(st.integers(0, len(steps)))
    doc: dict[str, Any] = {"route": {"steps": steps, "current": current}, "payload": payload}
    doc |= extra
    if headers:
        doc["headers"] = headers
    if envelope_id:
        doc["id"] = envelope_id
    env = decode_envelope(json.dumps(doc).encode())
    assert isinstance(env, Envelope)
    assert json.loads(encode_envelope(env)) == doc
    if not env.route.exhausted:
        after = json.loads(encode_envelope(advance(env, b'"r"')))
        assert after["route"]["current"] == current + 1
        assert after["payload"] == "r"
        assert {k: v for k, v in after.items() if k not in ("route", "payload")} == {
            k: v for k, v in doc.items() if k not in ("route", "payload")
        }


@given(st.binary(max_size=200))
def test_garbage_never_escapes_the_error_tree(body: bytes) -> None:
    # Any outcome but an EnvelopeError (or success) propagates and fails the test.
    with contextlib.suppress(EnvelopeError):
        decode_envelope(body)


def test_msgspec_raw_payload_type() -> None:
    env = decode_envelope(b'{"route":{"steps":["a"]},"payload":"x"}')
    assert isinstance(env.payload, msgspec.Raw)
