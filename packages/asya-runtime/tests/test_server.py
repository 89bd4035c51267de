"""The runtime's socket protocol, served by an in-process :class:`RuntimeServer` on a real Unix
socket (see ``serve`` in conftest.py). What only the process shows is in test_process.py."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from typing import Any

import pytest

from asya_protocol import (
    MAX_ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    BlockingRuntimeClient,
    ErrorReply,
    OkReply,
    read_frame_blocking,
)
from asya_protocol.conformance import run_checks
from asya_testing.processes import ping, short_socket_path

Serve = Any


def ok(reply: Any) -> Any:
    assert isinstance(reply, OkReply), reply
    return reply.result_value()


def error(reply: Any) -> ErrorReply:
    assert isinstance(reply, ErrorReply), reply
    return reply


@pytest.mark.parametrize(
    ("handler", "payload", "expected"),
    [
        ("preprocess", {"text": "Hello world"}, {"tokens": [1, 2, 3]}),
        ("inference", {"tokens": [1, 2, 3]}, {"prediction": "greeting"}),
        (
            "split",
            {"text": "Hello world"},
            [{"chunk": 1, "text": "Hello"}, {"chunk": 2, "text": "world"}],
        ),
        ("async_split", {"text": "a b"}, [{"chunk": 1, "text": "a"}, {"chunk": 2, "text": "b"}]),
        ("listed", {}, [{"chunk": 1}, {"chunk": 2}]),
        ("one_list_result", {}, [[1, 2, 3]]),
        ("Model.predict", {"word": "Hello"}, {"label": "greeting", "instances": 1}),
    ],
)
async def test_handler_kinds_over_the_socket(
    serve: Serve, handler: str, payload: Any, expected: Any
) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            assert ok(client.call(payload)) == expected
            # The class is built once: a second call sees the same instance count.
            assert ok(client.call(payload)) == expected

    await serve(handler, check)


async def test_conformance_of_asya_runtime(serve: Serve) -> None:
    env = {"ASYA_MAX_FRAME_SIZE": "65536"}
    report = await serve(
        "asya_runtime.conformance:handler",
        lambda path: run_checks(path, max_frame_size=65536),
        env=env,
    )
    failures = [(r.name, r.detail) for r in report.results if not r.passed]
    assert not failures
    assert report.extended
    assert {r.name for r in report.results} >= {
        "hello-and-progress",
        "oversized-frame",
        "too-deep-request",
        "one-final-frame-per-request",
    }


async def test_error_codes(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            err = error(client.call({"x": 1}))
            assert err.error == "handler_error"
            assert "missing thing" in err.message
            assert err.details is not None
            assert err.details["type"] == "builtins.KeyError"
            assert "sample_handlers.py" in err.details["traceback"]
            # Malformed request: parse_error, and the connection stays usable.
            client.send(b'{"broken": ')
            assert error(client.reply()).error == "parse_error"
            assert error(client.call({"y": 2})).error == "handler_error"

    await serve("fails", check)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


async def test_too_deep_request_is_a_parse_error_and_the_connection_stays(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            client.send(b'{"op": "echo", "value": ' + nested(1000) + b"}")
            err = error(client.reply())
            assert err.error == "parse_error"
            assert f"the limit is {MAX_JSON_DEPTH}" in err.message
            # The same connection answers the next request.
            assert ok(client.call({"op": "echo", "value": "after"})) == "after"
            # Exactly at the limit is accepted (the echo op adds one level: the request object).
            value = json.loads(nested(MAX_JSON_DEPTH - 1))
            assert ok(client.call({"op": "echo", "value": value})) == value
            client.send(b'{"op": "echo", "value": ' + nested(MAX_JSON_DEPTH) + b"}")
            assert error(client.reply()).error == "parse_error"
            client.send(b'{"op": "echo", "value": "caf\\u00e9"}')
            assert ok(client.reply()) == "caf\u00e9"
            client.send(b'{"op": "echo", "value": "caf\xe9"}')
            assert "not valid UTF-8" in error(client.reply()).message
            assert ok(client.call({"op": "echo", "value": "still"})) == "still"

    await serve("asya_runtime.conformance:handler", check)


async def test_too_deep_envelope_mode_request(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            assert client.hello("envelope") is not None
            head = b'{"route": {"steps": ["router", "normal"]}, "payload": '
            client.send(head + nested(MAX_ENVELOPE_DEPTH) + b"}")
            err = error(client.reply())
            assert err.error == "parse_error"
            assert f"the limit is {MAX_ENVELOPE_DEPTH}" in err.message
            envelope = {"id": "m-2", "route": {"steps": ["router", "normal"]}, "payload": {}}
            assert ok(client.call(envelope))["payload"] == {"seen": {}, "id": "m-2"}

    await serve("envelope_router", check, env={"ASYA_HANDLER_MODE": "envelope"})


async def test_result_too_deep_to_encode(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            err = error(client.call({"depth": 5000}))
            assert err.error == "serialization_error"
            assert ok(client.call({"depth": 2})) == [[1]]

    await serve("nested_result", check)


async def test_user_chosen_code_and_retryable(serve: Serve) -> None:
    def check(path: str) -> ErrorReply:
        with BlockingRuntimeClient(path) as client:
            return error(client.call({}))

    err = await serve("chooses_code", check)
    assert (err.error, err.message, err.retryable) == ("model_busy", "GPU queue full", True)
    assert err.details == {"queue": 12}


async def test_system_exit_in_handler_is_an_error_not_a_dead_runtime(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            assert error(client.call({})).error == "handler_error"
            assert error(client.call({})).error == "handler_error"  # still serving
        assert ping(path)

    await serve("exits", check)


async def test_generator_failing_midway(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            err = error(client.call({}))
            assert err.error == "handler_error"
            assert "broke after one item" in err.message
            assert err.details is not None
            assert err.details["type"] == "builtins.ValueError"

    await serve("broken_generator", check)


async def test_unserialisable_result(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            assert error(client.call({})).error == "serialization_error"
            assert error(client.call({})).error == "serialization_error"

    await serve("unserialisable", check)


async def test_oversized_request_and_result(serve: Serve) -> None:
    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            assert ok(client.call({"size": 100})) == "x" * 100
            err = error(client.call({"size": 10_000}))
            assert err.error == "frame_too_large"
            assert ok(client.call({"size": 10})) == "x" * 10
        with BlockingRuntimeClient(path, max_frame_size=1 << 20) as client:
            client.send(json.dumps({"size": 1, "pad": "y" * 5000}).encode())
            assert error(client.reply()).error == "frame_too_large"
            assert read_frame_blocking(client.sock) is None  # then it closes the connection
        assert ping(path)

    await serve("big_result", check, env={"ASYA_MAX_FRAME_SIZE": "4096"})


async def test_requests_run_concurrently(serve: Serve) -> None:
    """Four requests only finish if four run at once (the handler waits on a 4-party barrier)."""
    results: list[Any] = []

    def check(path: str) -> None:
        def one() -> None:
            with BlockingRuntimeClient(path, timeout=20) as client:
                results.append(ok(client.call({})))

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    await serve("barrier", check, env={"ASYA_RUNTIME_CONCURRENCY": "4"})
    assert results == ["together"] * 4


async def test_a_def_handler_runs_in_its_connections_own_thread(serve: Serve) -> None:
    """No pool: each connection's requests run in that connection's thread, each in a fresh
    copy of the server's context (what one request sets, the next does not see)."""

    def check(path: str) -> list[list[dict[str, str]]]:
        with BlockingRuntimeClient(path) as a, BlockingRuntimeClient(path) as b:
            return [[ok(c.call({})) for _ in range(3)] for c in (a, b, a)]

    first, second, again = await serve("where", check)
    assert {r["before"] for r in first + second + again} == {"fresh"}
    threads = [{r["thread"] for r in replies} for replies in (first, second, again)]
    assert len(threads[0]) == 1, threads
    assert len(threads[1]) == 1, threads
    assert threads[0] == threads[2], threads
    assert threads[1] != threads[0], threads
    assert all(name.startswith("asya-connection-") for t in threads for name in t), threads


async def test_progress_from_a_def_handlers_own_threads(serve: Serve) -> None:
    """Progress reported at once from several threads of the handler: every frame whole and
    before the final reply, each thread's in its order."""

    def check(path: str) -> tuple[Any, list[str]]:
        with BlockingRuntimeClient(path) as client:
            assert client.hello("progress") is not None
            body = json.dumps({"threads": 4, "each": 200}).encode()
            reply, progress = client.final(body)
            return ok(reply), [p.message or "" for p in progress]

    result, messages = await serve("progress_from_threads", check)
    assert result == "reported"
    assert len(messages) == 800
    for n in range(4):
        assert [m for m in messages if m.startswith(f"{n}.")] == [f"{n}.{i}" for i in range(200)]


async def test_slow_handler_and_impatient_client(serve: Serve) -> None:
    def check(path: str) -> None:
        impatient = BlockingRuntimeClient(path, timeout=0.2)
        impatient.send(json.dumps({"seconds": 1.0, "value": "late"}).encode())
        with pytest.raises(TimeoutError):
            impatient.reply()
        impatient.close()  # gives up while the handler still runs
        with BlockingRuntimeClient(path) as client:
            assert ok(client.call({"seconds": 0, "value": "fine"})) == "fine"

    await serve("slow", check)


async def test_socket_file_permissions_and_directory(serve: Serve) -> None:
    path = os.path.join(os.path.dirname(short_socket_path()), "nested", "dir", "rt.sock")
    mode = await serve("preprocess", lambda p: os.stat(p).st_mode, socket_path=path)
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


async def test_progress_frames_when_negotiated(serve: Serve) -> None:
    def with_hello(path: str) -> Any:
        with BlockingRuntimeClient(path) as client:
            hello = client.hello("progress", "something-new")
            assert hello is not None
            assert hello.features == ("progress",)
            reply, progress = client.final(b"{}")
            assert ok(reply) == "done"
            # Without hello, no progress frames.
            with BlockingRuntimeClient(path) as plain:
                assert ok(plain.call({})) == "done"
            return progress

    progress = await serve("async_progress", with_hello)
    assert [p.progress for p in progress] == [0.25, 0.5, 0.75, 1.0]
    assert progress[0].message == "step 1"
    progress = await serve("sync_progress", with_hello)
    assert [(p.progress, p.message) for p in progress] == [(0.5, None), (None, "only a message")]


async def test_bad_progress_value_is_a_handler_error(serve: Serve) -> None:
    def check(path: str) -> ErrorReply:
        with BlockingRuntimeClient(path) as client:
            return error(client.call({}))

    err = await serve("bad_progress", check)
    assert err.error == "handler_error"
    assert "0..1" in err.message


async def test_envelope_mode(serve: Serve) -> None:
    envelope = {
        "id": "m-1",
        "route": {"steps": ["router", "normal"], "current": 0},
        "payload": {"q": 1},
        "headers": {"priority": "high"},
    }

    def check(path: str) -> Any:
        with BlockingRuntimeClient(path) as client:
            assert error(client.call(envelope)).error == "protocol_error"
        with BlockingRuntimeClient(path) as client:
            hello = client.hello("envelope")
            assert hello is not None
            assert hello.mode == "envelope"
            return ok(client.call(envelope))

    out = await serve("envelope_router", check, env={"ASYA_HANDLER_MODE": "envelope"})
    assert out["route"] == {"steps": ["router", "urgent"], "current": 0}
    assert out["payload"] == {"seen": {"q": 1}, "id": "m-1"}


async def test_logs_keep_payloads_out_above_debug(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asya_runtime")

    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            ok(client.call({"text": "SECRET-PAYLOAD-123"}))
            client.send(b'{"text": "SECRET-PAYLOAD-456" oops')
            error(client.reply())

    await serve("preprocess", check)
    assert "SECRET-PAYLOAD" not in caplog.text
    assert "request is not valid JSON" in caplog.text


async def test_debug_logs_one_line_per_request(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asya_runtime")

    def check(path: str) -> None:
        with BlockingRuntimeClient(path) as client:
            assert client.hello() is not None
            for _ in range(3):
                ok(client.call({"text": "Hello world"}))

    await serve("preprocess", check)
    assert caplog.text.count("request, ") == 3
    assert caplog.text.count("control, ") == 1  # the hello
