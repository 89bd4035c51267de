"""asya-runtime as a user runs it: the ``python -m asya_runtime`` process, for what only a
process shows (the entry point, signals, exit codes, ending with os._exit). The protocol
itself is tested in-process in test_server.py."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from asya_protocol import (
    BlockingRuntimeClient,
    ControlRequest,
    ErrorReply,
    OkReply,
    encode_control,
    read_frame_blocking,
    write_frame_blocking,
)
from asya_testing.processes import ping, short_socket_path, wait_until

StartRuntime = Any  # conftest.start_runtime


def result(reply: object) -> object:
    assert isinstance(reply, OkReply), reply
    return reply.result_value()


def test_raw_frames_on_the_wire(start_runtime: StartRuntime) -> None:
    """The entry point serves ASYA_HANDLER: the exact bytes of the seed's first exchange."""
    with start_runtime("preprocess") as (_, path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(path)
            write_frame_blocking(sock, b'{"text": "Hello world"}')
            assert read_frame_blocking(sock) == b'{"status":"ok","result":{"tokens":[1,2,3]}}'
        finally:
            sock.close()


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
            assert [result(c.reply()) for c in clients] == [0, 1]
            assert proc.wait(timeout=20) == 0
            assert read_frame_blocking(idle.sock) is None  # idle connections are closed
        finally:
            idle.close()
            for client in clients:
                client.close()
    assert not os.path.exists(path)
    assert "stopped" in proc.log()


def test_sigterm_grace_period_is_bounded(start_runtime: StartRuntime, tmp_path: Path) -> None:
    """A handler thread still running after the grace period: the process leaves through
    os._exit(0) (the interpreter would wait for the thread), and the request gets no reply."""
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
            assert result(busy.reply()) == 1
        finally:
            busy.close()
        assert proc.wait(timeout=20) == 0


def test_stale_socket_is_replaced_and_live_one_is_refused(start_runtime: StartRuntime) -> None:
    path = short_socket_path()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody listens on, as after a crash
    stale.close()
    with start_runtime("preprocess", socket_path=path) as (_, live_path):
        with start_runtime("preprocess", socket_path=live_path, wait_ready=False) as (second, _):
            assert second.wait(timeout=30) == 2
            assert "another process is serving on" in second.log()
        assert ping(live_path)


def _readiness(path: str) -> str:
    with BlockingRuntimeClient(path, timeout=5) as client:
        client.send(encode_control(ControlRequest(op="ping")))
        reply = client.reply()
    return reply.error if isinstance(reply, ErrorReply) else "ready"


def test_a_stuck_sync_handler_ends_the_process_with_status_70(
    start_runtime: StartRuntime,
) -> None:
    """A ``def`` handler in ``time.sleep``: not ready past ASYA_RUNTIME_TIMEOUT, and past
    ASYA_HANDLER_STUCK_EXIT the process exits 70 (the kubelet restarts it); no reply is sent,
    so the sidecar gives the message back."""
    env = {"ASYA_RUNTIME_TIMEOUT": "0.3", "ASYA_HANDLER_STUCK_EXIT": "0.5"}
    with (
        start_runtime("stuck_thread", env=env) as (proc, path),
        BlockingRuntimeClient(path, timeout=20) as client,
    ):
        assert _readiness(path) == "ready"
        client.send(json.dumps({"sleep": 3600}).encode())
        started = time.monotonic()
        wait_until(lambda: _readiness(path) == "not_ready", timeout=5, what="not ready")
        not_ready_after = time.monotonic() - started
        assert proc.wait(timeout=10) == 70
        exited_after = time.monotonic() - started
        assert read_frame_blocking(client.sock) is None
    assert 0.25 < not_ready_after < 0.8, not_ready_after
    assert 0.75 < exited_after < 3.0, exited_after
    log = proc.log()
    assert "handler stuck: connection " in log
    assert "a sync handler has held its slot" in log
    assert "Traceback" not in log
    assert "exiting so that it is restarted" in log


def test_out_of_descriptors_a_def_runtime_serves_on_and_accepts_again(
    start_runtime: StartRuntime,
) -> None:
    """The process's descriptors run out (its limit lowered to the next free one): a new
    connection waits in the backlog, unanswered, while the served ones go on; once one closes,
    the waiting one is accepted (within ASYA's one-second pause) and answered. Nothing exits."""
    request = json.dumps({"text": "Hello world"}).encode()
    expected = {"tokens": [1, 2, 3]}
    with start_runtime("preprocess") as (proc, path):
        held = [BlockingRuntimeClient(path, timeout=10) for _ in range(2)]
        waiting = None
        try:
            for client in held:
                assert result(client.call({"text": "Hello world"})) == expected
            open_fds = {int(fd) for fd in os.listdir(f"/proc/{proc.pid}/fd")}
            free = min(set(range(max(open_fds) + 2)) - open_fds)
            _, hard = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)
            resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (free, hard))
            waiting = BlockingRuntimeClient(path, timeout=0.5)  # connected: in the backlog
            waiting.send(request)
            with pytest.raises(TimeoutError):
                waiting.reply()
            for client in held:  # the connections being served go on
                assert result(client.call({"text": "Hello world"})) == expected
            held.pop().close()  # frees a descriptor in the runtime
            waiting.sock.settimeout(10)
            assert result(waiting.reply()) == expected
            assert proc.alive()
        finally:
            for client in [*held, *([waiting] if waiting else [])]:
                client.close()
    assert "cannot accept a connection: [Errno 24]" in proc.log()
