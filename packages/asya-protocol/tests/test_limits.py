from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asya_protocol import (
    MAX_ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    EnvelopeError,
    NestingTooDeepError,
    ProtocolError,
    RouteError,
    check_json,
    decode_envelope,
    decode_reply,
    decode_request,
    encode_envelope,
    error_end_envelope,
    json_depth,
)


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """``depth`` arrays around ``leaf``, alternating with objects to use both brackets."""
    body = leaf
    for level in range(depth):
        body = b"[" + body + b"]" if level % 2 else b'{"k":' + body + b"}"
    return body


def envelope_with(payload: bytes, **extra: bytes) -> bytes:
    fields = b"".join(b',"' + k.encode() + b'":' + v for k, v in extra.items())
    return b'{"route":{"steps":["a"]},"payload":' + payload + fields + b"}"


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"1", 0),
        (b'"[[[{{{"', 0),
        (b"[]", 1),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b"[[], [[]], []]", 3),
        (b'["\\"[[[", "\\\\", [1]]', 2),  # an escaped quote does not end the string
        (b'["\\\\", "[[[["]', 1),  # an escaped backslash does: the next quote opens a string
        (b'{"k\\u0022[": ["]]]]"]}', 2),
        ("[[\u00e9]]", 2),
    ],
)
def test_json_depth(body: bytes | str, depth: int) -> None:
    assert json_depth(body) == depth


@given(
    st.recursive(
        st.none() | st.integers() | st.text(alphabet='[]{}"\\ab\n\u00e9'),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=30,
    )
)
def test_json_depth_matches_the_value(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    assert json_depth(json.dumps(value, ensure_ascii=False).encode()) == depth(value)


def test_depth_exactly_at_the_limit_passes_one_more_fails() -> None:
    check_json(nested(MAX_JSON_DEPTH))
    with pytest.raises(NestingTooDeepError) as info:
        check_json(nested(MAX_JSON_DEPTH + 1), what="payload")
    assert info.value.limit == MAX_JSON_DEPTH
    assert info.value.depth == MAX_JSON_DEPTH + 1
    assert str(info.value) == f"payload nests {MAX_JSON_DEPTH + 1} levels deep; the limit is 128"


def test_brackets_inside_strings_do_not_count() -> None:
    text = b'"' + b"[{" * 500 + b'\\"' + b"[" * 500 + b'"'
    check_json(b"[" + text + b"," + text + b"]", max_depth=1)
    # Many brackets in total, few of them nested: the full scan runs and passes.
    check_json(b"[" + b"[]," * 1000 + b"[]]", max_depth=2)


def test_invalid_utf8_is_refused_naming_the_byte() -> None:
    with pytest.raises(EnvelopeError, match=r"request is not valid UTF-8 \(byte 7"):
        check_json(b'{"a": "\xff"}', what="request")
    check_json('{"a": "\u00e9"}'.encode())


def test_a_1000_deep_2kb_envelope_is_refused_fast() -> None:
    body = envelope_with(b"[" * 1000 + b"]" * 1000)
    assert len(body) < 2100
    started = time.perf_counter()
    with pytest.raises(NestingTooDeepError) as info:
        decode_envelope(body)
    assert time.perf_counter() - started < 0.5
    assert not isinstance(info.value, RouteError)  # the sidecar's parse_error, not route_error
    assert f"the limit is {MAX_ENVELOPE_DEPTH}" in str(info.value)


def test_a_deep_unknown_field_is_refused() -> None:
    with pytest.raises(NestingTooDeepError):
        decode_envelope(envelope_with(b"{}", x_deep=b"[" * 1000 + b"]" * 1000))


def test_envelope_limit_leaves_room_for_error_end() -> None:
    envelope = decode_envelope(envelope_with(nested(MAX_JSON_DEPTH)))
    failed = error_end_envelope(envelope, error="handler_error", message="boom")
    body = encode_envelope(failed)
    assert json_depth(body) == MAX_ENVELOPE_DEPTH
    assert decode_envelope(body).id == failed.id
    with pytest.raises(NestingTooDeepError):
        decode_envelope(envelope_with(nested(MAX_ENVELOPE_DEPTH)))


def test_invalid_utf8_in_a_raw_payload_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="not valid UTF-8"):
        decode_envelope(envelope_with(b'{"text": "caf\xe9"}'))


def test_decode_request() -> None:
    assert decode_request(b'{"a": [1]}') == {"a": [1]}
    decode_request(nested(MAX_JSON_DEPTH))
    with pytest.raises(NestingTooDeepError):
        decode_request(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(NestingTooDeepError):
        decode_request(b"[" * 100_000)
    decode_request(nested(MAX_ENVELOPE_DEPTH), max_depth=MAX_ENVELOPE_DEPTH)
    with pytest.raises(EnvelopeError, match="not valid JSON"):
        decode_request(b"{nope")
    with pytest.raises(EnvelopeError, match="UTF-8"):
        decode_request(b'"\xc3"')


def test_decode_reply_limits_the_result() -> None:
    decode_reply(b'{"status":"ok","result":' + nested(MAX_JSON_DEPTH) + b"}")
    with pytest.raises(NestingTooDeepError) as info:
        decode_reply(b'{"status":"ok","result":' + b"[" * 1000 + b"]" * 1000 + b"}")
    assert str(info.value) == "runtime result nests 1000 levels deep; the limit is 128"
    assert isinstance(info.value, ProtocolError)
    with pytest.raises(EnvelopeError, match="UTF-8"):
        decode_reply(b'{"status":"ok","result":"\xed\xa0\x80"}')  # an encoded surrogate


def test_docs_state_the_limits_of_the_code() -> None:
    root = Path(__file__).resolve().parents[3]
    protocol = (root / "docs/protocol.md").read_text()
    assert f"| {MAX_JSON_DEPTH} | `MAX_JSON_DEPTH` |" in protocol
    assert f"| {MAX_ENVELOPE_DEPTH} | `MAX_ENVELOPE_DEPTH` |" in protocol
    for page in ("docs/sidecar.md", "packages/asya-runtime/README.md"):
        text = (root / page).read_text()
        assert f"deeper than {MAX_JSON_DEPTH}" in text, page
        assert f"{MAX_ENVELOPE_DEPTH} " in text, page
