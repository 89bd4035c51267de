"""asya-runtime as a user runs it: a real process, a real Unix socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from asya_protocol import (
    MAX_ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    BlockingRuntimeClient,
    ErrorReply,
    OkReply,
    read_frame_blocking,
    write_frame_blocking,
)
from asya_protocol.conformance import run_checks
from asya_testing.processes import ManagedProcess, ping, short_socket_path, wait_until

StartRuntime = Callable[..., AbstractContextManager[tuple[ManagedProcess, str]]]


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
def test_handler_kinds_over_the_socket(
    start_runtime: StartRuntime, handler: str, payload: Any, expected: Any
) -> None:
    with start_runtime(handler) as (_, path), BlockingRuntimeClient(path) as client:
        assert ok(client.call(payload)) == expected
        # The class is built once: a second call sees the same instance count.
        assert ok(client.call(payload)) == expected


def test_conformance_of_asya_runtime(start_runtime: StartRuntime) -> None:
    env = {"ASYA_MAX_FRAME_SIZE": "65536"}
    with start_runtime("asya_runtime.conformance:handler", env=env) as (_, path):
        report = run_checks(path, max_frame_size=65536)
    failures = [(r.name, r.detail) for r in report.results if not r.passed]
    assert not failures
    assert report.extended
    assert {r.name for r in report.results} >= {
        "hello-and-progress",
        "oversized-frame",
        "too-deep-request",
        "one-final-frame-per-request",
    }


def test_error_codes(start_runtime: StartRuntime) -> None:
    with start_runtime("fails") as (_, path), BlockingRuntimeClient(path) as client:
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


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def test_too_deep_request_is_a_parse_error_and_the_connection_stays(
    start_runtime: StartRuntime,
) -> None:
    with (
        start_runtime("asya_runtime.conformance:handler") as (_, path),
        BlockingRuntimeClient(path) as client,
    ):
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


def test_too_deep_envelope_mode_request(start_runtime: StartRuntime) -> None:
    env = {"ASYA_HANDLER_MODE": "envelope"}
    with (
        start_runtime("envelope_router", env=env) as (_, path),
        BlockingRuntimeClient(path) as client,
    ):
        assert client.hello("envelope") is not None
        head = b'{"route": {"steps": ["router", "normal"]}, "payload": '
        client.send(head + nested(MAX_ENVELOPE_DEPTH) + b"}")
        err = error(client.reply())
        assert err.error == "parse_error"
        assert f"the limit is {MAX_ENVELOPE_DEPTH}" in err.message
        envelope = {"id": "m-2", "route": {"steps": ["router", "normal"]}, "payload": {}}
        assert ok(client.call(envelope))["payload"] == {"seen": {}, "id": "m-2"}


def test_result_too_deep_to_encode(start_runtime: StartRuntime) -> None:
    with start_runtime("nested_result") as (_, path), BlockingRuntimeClient(path) as client:
        err = error(client.call({"depth": 5000}))
        assert err.error == "serialization_error"
        assert ok(client.call({"depth": 2})) == [[1]]


def test_user_chosen_code_and_retryable(start_runtime: StartRuntime) -> None:
    with start_runtime("chooses_code") as (_, path), BlockingRuntimeClient(path) as client:
        err = error(client.call({}))
    assert (err.error, err.message, err.retryable) == ("model_busy", "GPU queue full", True)
    assert err.details == {"queue": 12}


def test_system_exit_in_handler_is_an_error_not_a_dead_runtime(start_runtime: StartRuntime) -> None:
    with start_runtime("exits") as (proc, path), BlockingRuntimeClient(path) as client:
        assert error(client.call({})).error == "handler_error"
        assert proc.alive()


def test_generator_failing_midway(start_runtime: StartRuntime) -> None:
    with start_runtime("broken_generator") as (_, path), BlockingRuntimeClient(path) as client:
        err = error(client.call({}))
        assert err.error == "handler_error"
        assert "broke after one item" in err.message
        assert err.details is not None
        assert err.details["type"] == "builtins.ValueError"


def test_unserialisable_result(start_runtime: StartRuntime) -> None:
    with start_runtime("unserialisable") as (_, path), BlockingRuntimeClient(path) as client:
        assert error(client.call({})).error == "serialization_error"
        assert error(client.call({})).error == "serialization_error"


def test_oversized_request_and_result(start_runtime: StartRuntime) -> None:
    env = {"ASYA_MAX_FRAME_SIZE": "4096"}
    with start_runtime("big_result", env=env) as (_, path):
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


def test_requests_run_concurrently(start_runtime: StartRuntime) -> None:
    """Four requests only finish if four run at once (the handler waits on a 4-party barrier)."""
    env = {"ASYA_RUNTIME_CONCURRENCY": "4", "TEST_BARRIER": "4"}
    results: list[Any] = []
    with start_runtime("barrier", env=env) as (_, path):

        def one() -> None:
            with BlockingRuntimeClient(path, timeout=20) as client:
                results.append(ok(client.call({})))

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert results == ["together"] * 4


def test_slow_handler_and_impatient_client(start_runtime: StartRuntime) -> None:
    with start_runtime("slow") as (proc, path):
        impatient = BlockingRuntimeClient(path, timeout=0.2)
        impatient.send(json.dumps({"seconds": 1.0, "value": "late"}).encode())
        with pytest.raises(TimeoutError):
            impatient.reply()
        impatient.close()  # gives up while the handler still runs
        with BlockingRuntimeClient(path) as client:
            assert ok(client.call({"seconds": 0, "value": "fine"})) == "fine"
        assert proc.alive()


def test_sigterm_finishes_in_flight_requests(start_runtime: StartRuntime, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"TEST_MARK_DIR": str(marks)}
    with start_runtime("slow_marked", env=env) as (proc, path):
        clients = [BlockingRuntimeClient(path, timeout=20) for _ in range(2)]
        idle = BlockingRuntimeClient(path)
        try:
            for n, client in enumerate(clients):
                client.send(json.dumps({"seconds": 1.0, "value": n}).encode())
            wait_until(lambda: len(list(marks.iterdir())) == 2, timeout=10, what="both started")
            proc.signal(signal.SIGTERM)
            assert [ok(c.reply()) for c in clients] == [0, 1]
            assert proc.wait(timeout=20) == 0
            assert read_frame_blocking(idle.sock) is None  # idle connections are closed
        finally:
            idle.close()
            for client in clients:
                client.close()
    assert not os.path.exists(path)
    assert "stopped" in proc.log()


def test_sigterm_grace_period_is_bounded(start_runtime: StartRuntime, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"TEST_MARK_DIR": str(marks), "ASYA_SHUTDOWN_GRACE": "0.2"}
    with (
        start_runtime("slow_marked", env=env) as (proc, path),
        BlockingRuntimeClient(path, timeout=20) as client,
    ):
        client.send(json.dumps({"seconds": 30, "value": "stuck"}).encode())
        wait_until(lambda: (marks / "stuck").exists(), timeout=10, what="request started")
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert read_frame_blocking(client.sock) is None  # no reply: the sidecar redelivers
    assert "grace period of 0.2s over" in proc.log()


def test_no_new_connections_after_sigterm(start_runtime: StartRuntime, tmp_path: Path) -> None:
    env = {"TEST_MARK_DIR": str(tmp_path)}
    with start_runtime("slow_marked", env=env) as (proc, path):
        busy = BlockingRuntimeClient(path, timeout=20)
        try:
            busy.send(json.dumps({"seconds": 1.0, "value": 1}).encode())
            wait_until(lambda: (tmp_path / "1").exists(), timeout=10, what="request started")
            proc.signal(signal.SIGTERM)
            wait_until(lambda: "shutting down" in proc.log(), timeout=10, what="shutdown begun")
            with pytest.raises((ConnectionError, FileNotFoundError)):
                BlockingRuntimeClient(path).call({"seconds": 0, "value": 2})
            assert ok(busy.reply()) == 1
        finally:
            busy.close()
        assert proc.wait(timeout=20) == 0


def test_socket_file_permissions_and_directory(start_runtime: StartRuntime) -> None:
    path = os.path.join(os.path.dirname(short_socket_path()), "nested", "dir", "rt.sock")
    with start_runtime("preprocess", socket_path=path):
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660


def test_stale_socket_is_replaced_and_live_one_is_refused(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    path = short_socket_path()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody listens on, as after a crash
    stale.close()
    with start_runtime("preprocess", socket_path=path) as (_, live_path):
        with start_runtime("preprocess", socket_path=live_path, wait_ready=False) as (second, _):
            assert second.wait(timeout=30) == 2
            assert "another process is serving on" in second.log()
        assert ping(live_path)


def test_progress_frames_when_negotiated(start_runtime: StartRuntime) -> None:
    for handler in ("async_progress", "sync_progress"):
        with start_runtime(handler) as (_, path), BlockingRuntimeClient(path) as client:
            hello = client.hello("progress", "something-new")
            assert hello is not None
            assert hello.features == ("progress",)
            reply, progress = client.final(b"{}")
            assert ok(reply) == "done"
            if handler == "async_progress":
                assert [p.progress for p in progress] == [0.25, 0.5, 0.75, 1.0]
                assert progress[0].message == "step 1"
            else:
                assert [(p.progress, p.message) for p in progress] == [
                    (0.5, None),
                    (None, "only a message"),
                ]
        with start_runtime(handler) as (_, path), BlockingRuntimeClient(path) as client:
            assert ok(client.call({})) == "done"  # no progress frames without hello


def test_bad_progress_value_is_a_handler_error(start_runtime: StartRuntime) -> None:
    with start_runtime("bad_progress") as (_, path), BlockingRuntimeClient(path) as client:
        err = error(client.call({}))
    assert err.error == "handler_error"
    assert "0..1" in err.message


def test_envelope_mode(start_runtime: StartRuntime) -> None:
    env = {"ASYA_HANDLER_MODE": "envelope"}
    envelope = {
        "id": "m-1",
        "route": {"steps": ["router", "normal"], "current": 0},
        "payload": {"q": 1},
        "headers": {"priority": "high"},
    }
    with start_runtime("envelope_router", env=env) as (_, path):
        with BlockingRuntimeClient(path) as client:
            assert error(client.call(envelope)).error == "protocol_error"
        with BlockingRuntimeClient(path) as client:
            hello = client.hello("envelope")
            assert hello is not None
            assert hello.mode == "envelope"
            out = ok(client.call(envelope))
    assert out["route"] == {"steps": ["router", "urgent"], "current": 0}
    assert out["payload"] == {"seen": {"q": 1}, "id": "m-1"}


def test_logs_keep_payloads_out_above_debug(start_runtime: StartRuntime) -> None:
    with start_runtime("preprocess") as (proc, path), BlockingRuntimeClient(path) as client:
        ok(client.call({"text": "SECRET-PAYLOAD-123"}))
        client.send(b'{"text": "SECRET-PAYLOAD-456" oops')
        error(client.reply())
    assert "SECRET-PAYLOAD" not in proc.log()
    assert "request is not valid JSON" in proc.log()


def test_debug_logs_one_line_per_request(start_runtime: StartRuntime) -> None:
    env = {"ASYA_LOG_LEVEL": "DEBUG"}
    with start_runtime("preprocess", env=env) as (proc, path), BlockingRuntimeClient(path) as c:
        for _ in range(3):
            ok(c.call({"text": "Hello world"}))
        wait_until(lambda: proc.log().count("request, ") >= 3, timeout=5)
    assert proc.log().count("request, ") == 3
    assert proc.log().count("control, ") == 1  # the readiness ping


def test_raw_frames_on_the_wire(start_runtime: StartRuntime) -> None:
    """The exact bytes of the seed's first exchange."""
    with start_runtime("preprocess") as (_, path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(path)
            write_frame_blocking(sock, b'{"text": "Hello world"}')
            assert read_frame_blocking(sock) == b'{"status":"ok","result":{"tokens":[1,2,3]}}'
        finally:
            sock.close()
