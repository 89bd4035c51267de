"""Streaming handlers (``@streaming`` generators): partial results in order before the final
result, only where negotiated; errors mid-stream; timeouts and abandoned requests stop them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asya_protocol import (
    BlockingRuntimeClient,
    ControlRequest,
    ErrorReply,
    OkReply,
    PartialReply,
    ProgressReply,
    Reply,
    decode_reply,
    encode_control,
    read_frame_blocking,
)
from asya_protocol.conformance import run_checks
from asya_runtime import HandlerLoadError, load_handler

Serve = Any
HERE = str(Path(__file__).parent)


def _exchange(
    path: str, payload: Any, *features: str
) -> tuple[Reply, list[PartialReply], list[ProgressReply]]:
    with BlockingRuntimeClient(path, timeout=10) as c:
        if features:
            hello = c.hello(*features)
            assert hello is not None
            assert ("partial" in hello.features) == ("partial" in features)
        reply, progress, partials = c.stream(json.dumps(payload).encode())
        # Nothing after the final frame, and the connection serves the next request.
        again, _, _ = c.stream(json.dumps(payload).encode())
        assert type(again) is type(reply)
    return reply, partials, progress


def _ok(reply: Reply) -> Any:
    assert isinstance(reply, OkReply), reply
    return reply.result_value()


@pytest.mark.parametrize("handler", ["words", "async_words"])
async def test_partials_in_order_then_the_final_result(serve: Serve, handler: str) -> None:
    reply, partials, progress = await serve(
        f"streaming_handlers:{handler}",
        lambda p: _exchange(p, {"text": "the quick brown fox"}, "partial", "progress"),
    )
    assert [p.value() for p in partials] == ["the", "quick", "brown", "fox"]
    if handler == "words":
        assert _ok(reply) == {"text": "the quick brown fox", "words": 4}
    else:
        assert _ok(reply) == {"count": 4}
        assert [p.message for p in progress] == ["all words"]


async def test_without_the_feature_partials_are_dropped(serve: Serve) -> None:
    for features in [("progress",), ()]:
        reply, partials, _ = await serve(
            "streaming_handlers:words", lambda p, f=features: _exchange(p, {"text": "a b"}, *f)
        )
        assert partials == []
        assert _ok(reply) == {"text": "a b", "words": 2}


async def test_final_ends_the_generator_and_none_without_it(serve: Serve) -> None:
    reply, partials, _ = await serve(
        "streaming_handlers:words_final", lambda p: _exchange(p, {}, "partial")
    )
    assert [p.value() for p in partials] == ["a"]
    assert _ok(reply) == {"via": "final"}
    reply, partials, _ = await serve(
        "streaming_handlers:async_no_final", lambda p: _exchange(p, {}, "partial")
    )
    assert [p.value() for p in partials] == ["only"]
    assert _ok(reply) is None


async def test_a_final_list_is_fan_out(serve: Serve) -> None:
    reply, partials, _ = await serve(
        "streaming_handlers:fan_out_at_the_end", lambda p: _exchange(p, {}, "partial")
    )
    assert [p.value() for p in partials] == ["thinking"]
    assert isinstance(reply, OkReply)
    fan = reply.fan_out()
    assert fan is not None
    assert [json.loads(bytes(r)) for r in fan] == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("handler", "code", "sent"),
    [
        ("fails_mid_stream", "gave_up", ["one", "two"]),
        ("async_fails_mid_stream", "handler_error", ["one"]),
        ("not_json", "serialization_error", [{"fine": True}]),
    ],
)
async def test_an_error_mid_stream_is_the_final_reply(
    serve: Serve, handler: str, code: str, sent: list[Any]
) -> None:
    reply, partials, _ = await serve(
        f"streaming_handlers:{handler}", lambda p: _exchange(p, {}, "partial")
    )
    assert [p.value() for p in partials] == sent
    assert isinstance(reply, ErrorReply)
    assert reply.error == code


@pytest.mark.parametrize("handler", ["endless", "async_endless"])
async def test_a_streaming_handler_past_the_timeout_is_stopped(serve: Serve, handler: str) -> None:
    import streaming_handlers

    def check(path: str) -> tuple[Reply, int, Reply]:
        with BlockingRuntimeClient(path, timeout=10) as c:
            c.hello("partial")
            reply, _, partials = c.stream(b"{}")
            ping = BlockingRuntimeClient(path, timeout=10)
            with ping:
                ping.send(encode_control(ControlRequest(op="ping")))
                pong = ping.reply()
        return reply, len(partials), pong

    reply, count, pong = await serve(
        f"streaming_handlers:{handler}", check, env={"ASYA_RUNTIME_TIMEOUT": "0.5"}
    )
    assert isinstance(reply, ErrorReply)
    assert reply.error == "timeout"
    assert count >= 1
    assert streaming_handlers.closed.is_set()  # its finally ran: the generator was closed
    assert _ok(pong) == "pong"  # and its slot is free: the runtime is ready


@pytest.mark.parametrize("handler", ["endless", "async_endless"])
async def test_an_abandoned_streaming_handler_is_stopped(serve: Serve, handler: str) -> None:
    import streaming_handlers

    def check(path: str) -> Reply:
        with BlockingRuntimeClient(path, timeout=10) as c:
            c.hello("partial")
            c.send(b"{}")
            frame = read_frame_blocking(c.sock)  # the first partial result: it runs
            assert frame is not None
            assert isinstance(decode_reply(frame), PartialReply)
        c.sock.close()  # the sidecar gives up
        assert streaming_handlers.closed.wait(10)
        with BlockingRuntimeClient(path, timeout=10) as again:
            again.send(encode_control(ControlRequest(op="ping")))
            return again.reply()

    assert _ok(await serve(f"streaming_handlers:{handler}", check)) == "pong"  # slot free


def test_streaming_is_for_generators_and_not_for_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(HERE)
    with pytest.raises(HandlerLoadError, match="only a generator"):
        load_handler("streaming_handlers:not_a_generator")
    with pytest.raises(HandlerLoadError, match="cannot be a generator"):
        load_handler("streaming_handlers:streaming_batch")
    handler = load_handler("streaming_handlers:words")
    assert handler.streaming
    assert not load_handler("sample_handlers:split").streaming


async def test_conformance_with_and_without_a_streaming_handler(serve: Serve) -> None:
    for handler, streams in [
        ("asya_runtime.conformance:streaming_handler", True),
        ("asya_runtime.conformance:handler", False),
    ]:
        report = await serve(handler, lambda path: run_checks(path, timeout=5.0))
        failed = [(r.name, r.detail) for r in report.results if not r.passed]
        assert not failed, (handler, failed)
        names = {r.name for r in report.results}
        partial = {
            "partial-hello",
            "partials-in-order",
            "partials-then-error",
            "no-partials-without-negotiation",
        }
        assert (partial <= names) is streams, names
        assert not streams or "hello-and-progress" in names
