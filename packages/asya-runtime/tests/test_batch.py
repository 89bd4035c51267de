"""Batch handlers (``@batch``) over the socket: the hello, batch requests and replies, per-item
and whole-batch errors, a base sidecar's single payloads, and refusals at load."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asya_protocol import (
    BatchLimits,
    BatchOkReply,
    BlockingRuntimeClient,
    ErrorReply,
    OkReply,
    decode_batch_reply,
    encode_batch_request,
    read_frame_blocking,
    split_batch_reply,
)
from asya_protocol.conformance import run_checks
from asya_runtime import HandlerLoadError, batch, load_handler

Serve = Any


def exchange(client: BlockingRuntimeClient, items: list[Any]) -> BatchOkReply | ErrorReply:
    client.send(encode_batch_request([json.dumps(i).encode() for i in items]))
    frame = read_frame_blocking(client.sock)
    assert frame is not None
    reply = decode_batch_reply(frame)
    assert isinstance(reply, BatchOkReply | ErrorReply)
    return reply


def values(reply: BatchOkReply | ErrorReply, size: int) -> list[Any]:
    return [
        r.result_value() if isinstance(r, OkReply) else ("error", r.error)
        for r in split_batch_reply(reply, size)
    ]


async def test_batch_requests_and_replies(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            hello = client.hello("batch", "progress")
            assert hello is not None
            assert sorted(hello.features) == ["batch", "progress"]
            assert hello.batch == BatchLimits(max_size=4, max_wait_ms=20.0)
            items = [{"n": 1}, {"n": 2, "bad": True}, {"n": 3, "split": True}, {"n": 4}]
            got = values(exchange(client, items), 4)
            assert got == [{"n": 2}, ("error", "bad_item"), [3, 3], {"n": 8}]
            got = values(exchange(client, [{"n": 1, "unencodable": True}, {"n": 5}]), 2)
            assert got == [("error", "serialization_error"), {"n": 10}]
            over = exchange(client, [{"n": i} for i in range(5)])
            assert isinstance(over, ErrorReply)
            assert over.error == "protocol_error"
            assert "max_size 4" in over.message
            client.send(b'{"n": 1}')  # not a batch frame on a batch connection
            assert isinstance(client.reply(), ErrorReply)
            assert values(exchange(client, [{"n": 6}]), 1) == [{"n": 12}]

    await serve("batch_handlers:double", check)


async def test_a_base_sidecar_sends_one_payload_at_a_time(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            hello = client.hello("progress")  # no batch: the handler gets lists of one
            assert hello is not None
            assert hello.batch is None
            reply = client.call({"n": 4})
            assert isinstance(reply, OkReply)
            assert reply.result_value() == {"n": 8}
            failed = client.call({"n": 4, "bad": True})
            assert isinstance(failed, ErrorReply)
            assert failed.error == "bad_item"
            split = client.call({"n": 2, "split": True})
            assert isinstance(split, OkReply)
            assert split.result_value() == [2, 2]

    await serve("batch_handlers:double", check)


@pytest.mark.parametrize(
    ("handler", "code", "text"),
    [
        ("batch_handlers:crash", "handler_error", "crashed on 3 payloads"),
        ("batch_handlers:short", "protocol_error", "returned 2 results for 3 item(s)"),
    ],
)
async def test_whole_batch_errors(serve: Serve, handler: str, code: str, text: str) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            assert client.hello("batch") is not None
            reply = exchange(client, [1, 2, 3])
            assert isinstance(reply, ErrorReply)
            assert reply.error == code
            assert text in reply.message
            assert values(reply, 3) == [("error", code)] * 3

    await serve(handler, check)


@pytest.mark.parametrize("handler", ["batch_handlers:async_double", "batch_handlers:Model.predict"])
async def test_async_and_method_batch_handlers(serve: Serve, handler: str) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            assert client.hello("batch") is not None
            got = values(exchange(client, [{"n": 1}, {"n": 2}]), 2)
            assert got in ([{"n": 2}, {"n": 4}], [2, 2])

    await serve(handler, check)


async def test_conformance_with_and_without_a_batch_handler(serve: Serve) -> None:
    for handler, batched in (
        ("asya_runtime.conformance:batch_handler", True),
        ("asya_runtime.conformance:handler", False),
    ):
        report = await serve(handler, lambda path: run_checks(path, timeout=5.0))
        failures = [(r.name, r.detail) for r in report.results if not r.passed]
        assert not failures, handler
        names = {r.name for r in report.results}
        batch_checks = {n for n in names if n.startswith("batch-")}
        if batched:
            assert batch_checks >= {
                "batch-hello",
                "batch-results-in-order",
                "batch-per-item-error",
                "batch-whole-batch-error",
                "batch-over-max-size",
            }
        else:
            assert not batch_checks


def test_a_generator_batch_handler_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    with pytest.raises(HandlerLoadError, match="cannot be a generator"):
        load_handler("batch_handlers:generator")
    assert load_handler("batch_handlers:double").batch is not None
    assert load_handler("batch_handlers:Model.predict").batch is not None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_size": 0}, ValueError),
        ({"max_size": 2.5}, TypeError),
        ({"max_size": True}, TypeError),
        ({"max_size": 4, "max_wait": -1}, ValueError),
        ({"max_size": 4, "max_wait": 61}, ValueError),
    ],
)
def test_bad_batch_declarations(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        batch(**kwargs)
