"""Handlers that outlive their request: an abandoned or timed-out ``async`` handler is cancelled
and its slot freed; a ``def`` handler past ASYA_RUNTIME_TIMEOUT makes the runtime not ready
(``ping`` and new requests answered ``not_ready``) and, past ASYA_HANDLER_STUCK_EXIT, stop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from asya_protocol import (
    ControlRequest,
    ErrorReply,
    OkReply,
    Reply,
    decode_reply,
    encode_control,
    encode_frame,
    read_frame,
)
from asya_runtime import RuntimeServer, RuntimeSettings, load_handler
from asya_testing.processes import short_socket_path

HERE = str(Path(__file__).parent)

Running = tuple[RuntimeServer, str, "asyncio.Task[Any]"]
Runtime = Callable[..., AbstractAsyncContextManager[Running]]


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """An in-process server of a sample handler: (server, socket path, the serve task)."""
    monkeypatch.syspath_prepend(HERE)
    import sample_handlers

    sample_handlers.release_stuck.clear()
    sample_handlers.stuck_started.clear()

    @asynccontextmanager
    async def run(handler: str, env: Mapping[str, str]) -> AsyncIterator[Running]:
        spec = f"sample_handlers:{handler}"
        for name, value in env.items():
            if name.startswith("TEST_"):  # read by the handler, in this process
                monkeypatch.setenv(name, value)
        settings = RuntimeSettings.from_env(
            {"ASYA_HANDLER": spec, "ASYA_SOCKET_PATH": short_socket_path(), **env}
        )
        server = RuntimeServer(settings, load_handler(spec))
        stop, ready = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(server.serve(stop, ready))
        try:
            async with asyncio.timeout(10):
                await ready.wait()
            yield server, settings.socket_path, serving
        finally:
            sample_handlers.release_stuck.set()
            stop.set()
            await serving

    return run


class Conn:
    """One runtime connection, driven from the test's loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: str) -> Conn:
        return cls(*await asyncio.open_unix_connection(path))

    async def send(self, body: bytes | dict[str, Any]) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.writer.write(encode_frame(raw))
        await self.writer.drain()

    async def reply(self, timeout: float = 5.0) -> Reply | None:
        async with asyncio.timeout(timeout):
            frame = await read_frame(self.reader)
        return None if frame is None else decode_reply(frame)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def call(path: str, body: bytes | dict[str, Any]) -> Reply | None:
    conn = await Conn.open(path)
    try:
        await conn.send(body)
        return await conn.reply()
    finally:
        await conn.close()


async def ping(path: str) -> Reply | None:
    return await call(path, encode_control(ControlRequest(op="ping")))


def ok(reply: Reply | None) -> Any:
    assert isinstance(reply, OkReply), reply
    return reply.result_value()


def not_ready(reply: Reply | None) -> ErrorReply:
    assert isinstance(reply, ErrorReply), reply
    assert reply.error == "not_ready", reply
    assert reply.retryable is True
    return reply


async def until(condition: Callable[[], bool], *, timeout: float = 5.0) -> float:
    """Poll ``condition`` until true; how long it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state that has no event
            await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_abandoned_async_handlers_are_cancelled_and_free_their_slots(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Concurrency 2, seven requests abandoned mid-handler (the sidecar timed out and closed
    the connection): each handler is cancelled (its ``finally`` runs) and the runtime still
    answers the next request."""
    env = {"TEST_MARK_DIR": str(tmp_path), "ASYA_RUNTIME_CONCURRENCY": "2"}
    async with runtime("forever_or_fast", env) as (_, path, _):
        delays = []
        for n in range(2 + 5):
            conn = await Conn.open(path)
            await conn.send({"value": n})
            await until((tmp_path / f"started-{n}").exists)
            await conn.close()
            delays.append(await until((tmp_path / str(n)).exists))
        assert ok(await call(path, {"fast": "still serving"})) == "still serving"
        assert ok(await ping(path)) == "pong"
    assert max(delays) < 1.0, delays


async def test_a_connection_reset_mid_request_cancels_the_async_handler(
    runtime: Runtime, tmp_path: Path
) -> None:
    """The sidecar's end of the socket closes with the runtime's progress frames unread: the
    runtime's next read fails with a reset, not an end of stream. The handler is cancelled all
    the same, and the runtime serves the next request."""
    env = {"TEST_MARK_DIR": str(tmp_path)}
    async with runtime("reports_then_sleeps", env) as (_, path, _):
        conn = await Conn.open(path)
        await conn.send(encode_control(ControlRequest(op="hello", features=("progress",))))
        assert ok(await conn.reply()) is not None
        await conn.send({"value": "reset", "reports": 8})
        await until((tmp_path / "started-reset").exists)
        await asyncio.sleep(0.05)  # the progress frames reach this end, unread
        conn.writer.transport.abort()  # closed with unread bytes: the runtime sees a reset
        await until((tmp_path / "reset").exists, timeout=2.0)
        assert ok(await ping(path)) == "pong"


@pytest.mark.parametrize("when", ["with the request", "while it runs"])
async def test_bytes_during_a_request_close_the_connection_after_its_reply(
    runtime: Runtime, when: str
) -> None:
    """Requests are not pipelined: a frame sent before the reply (in the same write as the
    request, or while the handler runs) is not answered; the request is, then the connection
    is closed. The runtime serves the next connection."""
    async with runtime("naps", {}) as (_, path, _):
        conn = await Conn.open(path)
        try:
            first = encode_frame(json.dumps({"nap": 0.2, "value": "first"}).encode())
            second = encode_frame(json.dumps({"nap": 0, "value": "second"}).encode())
            if when == "with the request":
                conn.writer.write(first + second)
            else:
                conn.writer.write(first)
                await asyncio.sleep(0.05)
                conn.writer.write(second)
            await conn.writer.drain()
            assert ok(await conn.reply()) == "first"
            assert await conn.reply() is None  # closed, the second frame unanswered
        finally:
            await conn.close()
        assert ok(await call(path, {"nap": 0, "value": "next"})) == "next"


async def test_an_async_handler_past_the_timeout_is_cancelled(
    runtime: Runtime, tmp_path: Path
) -> None:
    env = {"TEST_MARK_DIR": str(tmp_path), "ASYA_RUNTIME_TIMEOUT": "0.3"}
    async with runtime("forever_or_fast", env) as (_, path, _):
        started = time.monotonic()
        reply = await call(path, {"value": "late"})
        took = time.monotonic() - started
        assert isinstance(reply, ErrorReply), reply
        assert reply.error == "timeout"
        assert "ASYA_RUNTIME_TIMEOUT (0.3s)" in reply.message
        assert (tmp_path / "late").read_text() == "cancelled"
        assert ok(await call(path, {"fast": 1})) == 1
    assert 0.3 <= took < 1.5


async def test_a_stuck_sync_handler_makes_the_runtime_not_ready_until_it_ends(
    runtime: Runtime,
) -> None:
    """Concurrency 1: the one thread is stuck past the timeout. A request waiting for its slot
    is refused at that moment, so are ping and new requests; when the thread ends the runtime
    is ready again."""
    env = {"ASYA_RUNTIME_CONCURRENCY": "1", "ASYA_RUNTIME_TIMEOUT": "0.3"}
    import sample_handlers

    async with runtime("stuck_thread", env) as (_, path, serving):
        stuck = await Conn.open(path)
        await stuck.send({"value": 1})
        await until(sample_handlers.stuck_started.is_set)
        started = time.monotonic()
        waiting = await Conn.open(path)
        await waiting.send({"fast": 2})
        refused = not_ready(await waiting.reply())
        assert 0.2 < time.monotonic() - started < 1.5
        assert refused.details == {"slots": 1, "busy": 1, "stuck": 1}
        assert "ASYA_RUNTIME_TIMEOUT (0.3s)" in refused.message
        not_ready(await ping(path))
        not_ready(await call(path, {"fast": 3}))
        sample_handlers.release_stuck.set()
        assert ok(await stuck.reply()) == "released"  # its own reply still arrives
        assert ok(await ping(path)) == "pong"
        assert ok(await call(path, {"fast": 4})) == 4
        await waiting.send({"fast": 5})  # the refused connection stays usable
        assert ok(await waiting.reply()) == 5
        await stuck.close()
        await waiting.close()
        assert not serving.done()


async def test_a_sync_handler_stuck_past_the_grace_period_stops_the_server(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"ASYA_RUNTIME_TIMEOUT": "0.2", "ASYA_HANDLER_STUCK_EXIT": "0.3"}
    async with runtime("stuck_thread", env) as (_, path, serving):
        conn = await Conn.open(path)
        await conn.send({"value": 1})
        started = time.monotonic()
        async with asyncio.timeout(5):
            assert await asyncio.shield(serving) == "stuck"
        took = time.monotonic() - started
        assert await conn.reply() is None  # no reply: the sidecar redelivers
        await conn.close()
    assert 0.5 <= took < 2.0
    assert "handler stuck: connection 1: a sync handler has held its slot" in caplog.text


async def test_an_async_handler_that_ignores_its_cancellation_is_stuck(
    runtime: Runtime, tmp_path: Path
) -> None:
    async with runtime("ignores_cancel", {"TEST_MARK_DIR": str(tmp_path)}) as (_, path, _):
        conn = await Conn.open(path)
        await conn.send({"more": 2.0})
        await until((tmp_path / "started").exists)
        await conn.close()  # abandoned: cancelled, but it runs on
        closed = time.monotonic()
        while not isinstance(await ping(path), ErrorReply):  # noqa: ASYNC110 - polls the runtime
            await asyncio.sleep(0.02)
        stuck_after = time.monotonic() - closed
        while isinstance(await ping(path), ErrorReply):  # noqa: ASYNC110 - polls the runtime
            await asyncio.sleep(0.02)
        ready_after = time.monotonic() - closed
    assert 0.9 < stuck_after < 1.8, stuck_after  # CANCEL_WAIT: a second to end
    assert 1.9 < ready_after < 3.0, ready_after  # ready again once it ended


def test_a_def_handler_that_ends_after_its_server_ends_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``def`` handler is stuck (its slot holds the timer of the stuck exit); the grace period
    over, the server returns and its loop closes. When the handler ends, its thread frees its
    slot and ends without an error (nothing on the closed loop waits for it)."""
    monkeypatch.syspath_prepend(HERE)
    import sample_handlers

    sample_handlers.release_stuck.clear()
    sample_handlers.stuck_started.clear()
    spec = "sample_handlers:stuck_thread"
    settings = RuntimeSettings.from_env(
        {
            "ASYA_HANDLER": spec,
            "ASYA_SOCKET_PATH": short_socket_path(),
            "ASYA_SHUTDOWN_GRACE": "0.1",
            "ASYA_RUNTIME_TIMEOUT": "0.2",
        }
    )
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)

    async def serve_then_stop() -> Any:
        server = RuntimeServer(settings, load_handler(spec))
        stop, ready = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(server.serve(stop, ready))
        await asyncio.wait_for(ready.wait(), 10)
        conn = await Conn.open(settings.socket_path)
        await conn.send({"value": 1})
        await until(sample_handlers.stuck_started.is_set)
        await until(lambda: not server.slots.readiness().ready)  # stuck
        stop.set()
        stopped = await serving
        await conn.close()
        return stopped

    assert asyncio.run(serve_then_stop()) == "abandoned"
    threads = [t for t in threading.enumerate() if t.name.startswith("asya-connection-")]
    sample_handlers.release_stuck.set()  # the handler ends after its loop closed
    for thread in threads:
        thread.join(10)
    assert threads
    assert not any(t.is_alive() for t in threads)
    assert errors == []
