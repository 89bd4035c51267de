"""The runtime's socket server: many connections, many exchanges per connection."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from asya_protocol import (
    MAX_ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    PROTOCOL_VERSION,
    EnvelopeError,
    ErrorCode,
    Feature,
    FrameError,
    FrameTooLargeError,
    HandlerMode,
    HelloResult,
    ProtocolError,
    decode_control,
    decode_request,
    encode_error,
    encode_frame,
    encode_ok,
    encode_progress,
    is_control_frame,
    read_frame,
)

from .__about__ import __version__
from .api import _reporter
from .errors import RuntimeStartError
from .invoke import call_handler, error_reply_for, ok_reply_for
from .loader import Handler
from .settings import RuntimeSettings

__all__ = ["RuntimeServer", "prepare_socket_path"]

log = logging.getLogger("asya_runtime")

SUPPORTED_FEATURES = frozenset({Feature.PROGRESS, Feature.ENVELOPE})
SOCKET_MODE = 0o660


def prepare_socket_path(path: str) -> None:
    """Create the directory if missing; remove a stale socket; refuse to steal a live one."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise RuntimeStartError(f"ASYA_SOCKET_PATH: cannot create {directory}: {exc}") from exc
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise RuntimeStartError(f"ASYA_SOCKET_PATH: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a stale file from a previous run
        log.info("removed stale socket file %s", path)
        return
    finally:
        probe.close()
    raise RuntimeStartError(f"ASYA_SOCKET_PATH: another process is serving on {path}")


@dataclass
class _Connection:
    number: int
    writer: asyncio.StreamWriter
    busy: bool = False
    progress: bool = False
    envelope: bool = False


class RuntimeServer:
    """Serve one handler on a Unix socket until :meth:`serve`'s ``stop`` event is set."""

    def __init__(self, settings: RuntimeSettings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="asya-handler"
        )
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._counter = 0
        self._stopping = False

    async def serve(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> bool:
        """Serve until ``stop`` is set, then shut down gracefully.

        Returns True when the grace period ran out with handler threads still running: the
        caller must then end the process without waiting for them.
        """
        path = self.settings.socket_path
        prepare_socket_path(path)
        old_umask = os.umask(0o117)  # the socket file is born 0660, never world-accessible
        try:
            server = await asyncio.start_unix_server(self._on_connection, path)
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        log.info(
            "asya-runtime %s serving %s (%s handler, %s mode) on %s",
            __version__,
            self.handler.name,
            self.handler.kind.value,
            self.settings.mode.value,
            path,
        )
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            abandoned = await self._shutdown(server)
        return abandoned

    async def _shutdown(self, server: asyncio.Server) -> bool:
        self._stopping = True
        server.close()  # stop accepting; existing connections stay
        for conn in self._connections.values():
            if not conn.busy:
                conn.writer.close()
        tasks = set(self._connections)
        abandoned = False
        if tasks:
            busy = sum(c.busy for c in self._connections.values())
            log.info("shutting down: waiting for %d request(s) in flight", busy)
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace)
            if pending:
                log.warning(
                    "grace period of %.1fs over: dropping %d connection(s)",
                    self.settings.shutdown_grace,
                    len(pending),
                )
                abandoned = True
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.settings.socket_path)
        log.info("stopped")
        return abandoned

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - asyncio always runs this callback in a task
            raise RuntimeError("connection callback outside a task")
        self._counter += 1
        conn = _Connection(number=self._counter, writer=writer)
        self._connections[task] = conn
        try:
            await self._serve_connection(conn, reader, writer)
        finally:
            del self._connections[task]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_connection(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        max_size = self.settings.max_frame_size
        while not self._stopping:
            try:
                body = await read_frame(reader, max_size=max_size)
            except FrameTooLargeError as exc:
                log.warning("connection %d: %s; closing it", conn.number, exc)
                await self._send(conn, encode_error(ErrorCode.FRAME_TOO_LARGE, str(exc)))
                return
            except FrameError as exc:
                log.warning("connection %d: %s", conn.number, exc)
                return
            except ConnectionError:
                return
            if body is None:
                return
            conn.busy = True
            try:
                started = time.perf_counter()
                control = is_control_frame(body)
                if control:
                    reply = self._control(conn, body)
                else:
                    reply = await self._exchange(conn, body)
                try:
                    frame = encode_frame(reply, max_size=max_size)
                except FrameTooLargeError as exc:
                    log.warning("connection %d: result %s", conn.number, exc)
                    frame = encode_frame(encode_error(ErrorCode.FRAME_TOO_LARGE, f"result {exc}"))
                if not await self._send_frame(conn, frame):
                    return
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "connection %d: %s, %d bytes in, %d bytes out, %.2f ms",
                        conn.number,
                        "control" if control else "request",
                        len(body),
                        len(reply),
                        (time.perf_counter() - started) * 1000,
                    )
            finally:
                conn.busy = False

    async def _send(self, conn: _Connection, body: bytes) -> bool:
        return await self._send_frame(conn, encode_frame(body))

    async def _send_frame(self, conn: _Connection, frame: bytes) -> bool:
        try:
            conn.writer.write(frame)
            await conn.writer.drain()
        except ConnectionError:
            log.debug("connection %d: peer gone before the reply", conn.number)
            return False
        return True

    def _control(self, conn: _Connection, body: bytes) -> bytes:
        try:
            request = decode_control(body)
        except ProtocolError as exc:
            return encode_error(ErrorCode.PROTOCOL_ERROR, str(exc))
        if request.op == "ping":
            return encode_ok("pong")
        agreed = sorted(f for f in SUPPORTED_FEATURES if f.value in request.features)
        conn.progress = Feature.PROGRESS in agreed
        conn.envelope = Feature.ENVELOPE in agreed
        return encode_ok(
            HelloResult(
                protocol=PROTOCOL_VERSION,
                mode=self.settings.mode,
                features=tuple(f.value for f in agreed),
                runtime=f"asya-runtime {__version__}",
            )
        )

    async def _exchange(self, conn: _Connection, body: bytes) -> bytes:
        envelope_mode = self.settings.mode is HandlerMode.ENVELOPE
        try:
            # Depth and UTF-8 are checked before decoding: a request nested too deep is a
            # parse_error like any bad JSON, and the connection stays open for the next one.
            value = decode_request(
                body, max_depth=MAX_ENVELOPE_DEPTH if envelope_mode else MAX_JSON_DEPTH
            )
        except EnvelopeError as exc:
            log.warning("connection %d: %s", conn.number, exc)
            return encode_error(ErrorCode.PARSE_ERROR, str(exc))
        if envelope_mode and not conn.envelope:
            return encode_error(
                ErrorCode.PROTOCOL_ERROR,
                "this runtime is in envelope mode: the sidecar must negotiate the 'envelope' "
                "feature with a hello frame first",
            )
        context = contextvars.copy_context()
        reporter = _ProgressReporter(conn) if conn.progress else None
        context.run(_reporter.set, reporter)
        async with self._slots:
            try:
                result = await call_handler(
                    self.handler, value, executor=self._executor, context=context
                )
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - becomes an error frame
                log.warning(
                    "connection %d: handler raised %s: %s", conn.number, type(exc).__name__, exc
                )
                return error_reply_for(exc, traceback_limit=self.settings.traceback_limit)
            finally:
                if reporter is not None:
                    reporter.close()
        return ok_reply_for(result)


class _ProgressReporter:
    """Writes progress frames for one request, from the loop thread or a handler thread."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._open = True

    def __call__(self, fraction: float | None, message: str | None) -> None:
        if self._open:
            frame = encode_frame(encode_progress(fraction, message))
            self._loop.call_soon_threadsafe(self._write, frame)

    def _write(self, frame: bytes) -> None:
        # Checked again on the loop: a report scheduled before close() is still written, in
        # order, before the final frame; one from a thread that outlived the request is not.
        if self._open and not self._conn.writer.is_closing():
            self._conn.writer.write(frame)

    def close(self) -> None:
        self._loop.call_soon(self._close)

    def _close(self) -> None:
        self._open = False
