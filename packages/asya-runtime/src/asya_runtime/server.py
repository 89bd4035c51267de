"""The runtime's socket server: many connections, many exchanges per connection."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

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
    decode_batch_request,
    decode_control,
    decode_request,
    encode_error,
    encode_frame,
    encode_ok,
    encode_partial,
    is_control_frame,
    read_frame,
    read_frame_buffered,
)

from .__about__ import __version__
from ._progress import ProgressReporter
from .api import _reporter
from .batching import batch_reply
from .errors import AsyaError
from .invoke import call_handler, error_reply_for, ok_reply_for, run_sync
from .loader import Handler, HandlerKind
from .settings import RuntimeSettings
from .slots import NotReadyError, Readiness, Request, Slots
from .socket_file import SOCKET_MODE, prepare_socket_path
from .threads import BlockingProgress, Negotiated, ThreadConnection
from .watch import Abandoned, HandlerTimeout, WatchedReader, first_of, run_watched

__all__ = ["RuntimeServer", "Stopped", "prepare_socket_path"]

log = logging.getLogger("asya_runtime")

SUPPORTED_FEATURES = frozenset({Feature.PROGRESS, Feature.ENVELOPE})
ASYNC_KINDS = frozenset({HandlerKind.ASYNC, HandlerKind.ASYNC_GENERATOR})


class Stopped(StrEnum):
    """How :meth:`RuntimeServer.serve` ended."""

    CLEAN = "clean"
    """Stopped, every request finished (or none was running)."""
    ABANDONED = "abandoned"
    """Stopped, but handler threads still ran after the grace period."""
    STUCK = "stuck"
    """A handler stayed stuck past ASYA_HANDLER_STUCK_EXIT: the process must exit non-zero."""
    FAILED = "failed"
    """A task of the server itself failed (it is logged): the process must exit non-zero."""


ACCEPT_RETRY = 1.0
"""Seconds before a thread-served runtime accepts again after running out of descriptors."""
_ACCEPT_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def not_ready_reply(readiness: Readiness) -> bytes:
    return encode_error(
        ErrorCode.NOT_READY, readiness.message, retryable=True, details=readiness.details()
    )


@dataclass
class _Connection(Negotiated):
    """A connection served on the loop (``async`` handlers, streaming ``def`` generators)."""

    writer: asyncio.StreamWriter = field(kw_only=True)


class RuntimeServer:
    """Serve one handler on a Unix socket until :meth:`serve`'s ``stop`` event is set.

    An ``async`` handler (or a streaming generator) is served on the loop; a ``def`` handler by
    a thread per connection, which reads, calls the handler and replies itself
    (:mod:`asya_runtime.threads`).
    """

    def __init__(self, settings: RuntimeSettings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self.slots = Slots(
            settings.concurrency, timeout=settings.runtime_timeout, stuck_exit=settings.stuck_exit
        )
        self._executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="asya-handler"
        )
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._threads: set[ThreadConnection] = set()
        self._counter = 0
        self._stopping = False
        self._failed = asyncio.Event()
        self._envelopes = settings.mode is HandlerMode.ENVELOPE
        self._depth = MAX_ENVELOPE_DEPTH if self._envelopes else MAX_JSON_DEPTH
        # A def handler's requests run in their connection's thread; a streaming def
        # generator runs a step at a time and can be stopped between two: it is served on the
        # loop and watched like an async handler, not left to the slot's deadline.
        self.threaded = handler.kind not in ASYNC_KINDS and not handler.streaming

    async def serve(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> Stopped:
        """Serve until ``stop`` is set, then shut down gracefully; or until a handler stays
        stuck past ASYA_HANDLER_STUCK_EXIT, then stop at once.

        Anything but :attr:`Stopped.CLEAN` means handler threads may still run: the caller
        must then end the process without waiting for them (non-zero for ``STUCK``).
        """
        path = self.settings.socket_path
        prepare_socket_path(path)
        old_umask = os.umask(0o117)  # the socket file is born 0660, never world-accessible
        listener: socket.socket | None = None
        server: asyncio.Server | None = None
        try:
            if self.threaded:
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(path)
                listener.listen(100)
                listener.setblocking(False)
            else:
                server = await asyncio.get_running_loop().create_unix_server(self._protocol, path)
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        background: list[asyncio.Task[None]] = []
        if listener is not None:
            background = [
                asyncio.create_task(self._accept_threads(listener), name="asya-accept"),
                asyncio.create_task(self.slots.watch_deadlines(), name="asya-deadlines"),
            ]
        log.info(
            "asya-runtime %s serving %s (%s handler, %s mode%s) on %s",
            __version__,
            self.handler.name,
            self.handler.kind.value,
            self.settings.mode.value,
            ", a thread per connection" if self.threaded else "",
            path,
        )
        if ready is not None:
            ready.set()
        for task in background:
            task.add_done_callback(self._supervise)
        ended: asyncio.Event | None = None
        try:
            ended = await first_of(stop, self.slots.exit_requested, self._failed)
        finally:
            if ended is self.slots.exit_requested:
                log.critical(
                    "handler stuck: %s; exiting so that it is restarted", self.slots.exit_reason
                )
            grace = 0.0 if ended is self.slots.exit_requested else None
            if listener is not None:
                abandoned = await self._shutdown_threads(listener, background, grace=grace)
            elif server is not None:
                abandoned = await self._shutdown(server, grace=grace)
        if ended is self.slots.exit_requested:
            return Stopped.STUCK
        if ended is self._failed:
            return Stopped.FAILED
        return Stopped.ABANDONED if abandoned else Stopped.CLEAN

    def _supervise(self, task: asyncio.Task[None]) -> None:
        """A task of the server ended while it serves: it failed (or ended, which it must not);
        the server stops, and the process exits non-zero."""
        if task.cancelled() and self._stopping:
            return
        exc = None if task.cancelled() else task.exception()
        log.critical("%s ended while serving: %r; stopping", task.get_name(), exc)
        self._failed.set()

    async def _shutdown(self, server: asyncio.Server, grace: float | None = None) -> bool:
        self._stopping = True
        grace = self.settings.shutdown_grace if grace is None else grace
        server.close()  # stop accepting; existing connections stay
        for conn in self._connections.values():
            if not conn.busy:
                conn.writer.close()
        tasks = set(self._connections)
        abandoned = False
        if tasks:
            busy = sum(c.busy for c in self._connections.values())
            log.info("shutting down: waiting for %d request(s) in flight", busy)
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                log.warning(
                    "grace period of %.1fs over: dropping %d connection(s)", grace, len(pending)
                )
                abandoned = True
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()
        self._stopped()
        return abandoned

    def _stopped(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.settings.socket_path)
        log.info("stopped")

    # --- def handlers: a thread per connection ----------------------------------------------

    async def _accept_threads(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # each request runs in a copy of it
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno not in _ACCEPT_SHORTAGES:
                    raise
                # Out of descriptors (or memory): the connection waits in the backlog. The
                # connections being served go on; accepting resumes in a moment, as asyncio's
                # own servers do.
                log.error(
                    "cannot accept a connection: %s; accepting again in %gs", exc, ACCEPT_RETRY
                )
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            try:
                sock.setblocking(True)
                self._counter += 1
                conn = ThreadConnection(
                    number=self._counter, sock=sock, ended=loop.create_future(), loop=loop
                )
                thread = threading.Thread(
                    target=self._serve_thread,
                    args=(conn, context),
                    name=f"asya-connection-{conn.number}",
                    daemon=True,  # a stuck handler must not hold the process's exit
                )
                thread.start()
            except BaseException:
                sock.close()  # not served: the peer sees the end at once
                raise
            self._threads.add(conn)
            conn.ended.add_done_callback(functools.partial(self._thread_ended, conn))

    def _thread_ended(self, conn: ThreadConnection, _: asyncio.Future[None]) -> None:
        self._threads.discard(conn)

    def _serve_thread(self, conn: ThreadConnection, context: contextvars.Context) -> None:
        """A connection's thread: read a frame, answer it, until the end of the stream."""
        try:
            while not self._stopping:
                body = self._next_frame_blocking(conn)
                if body is None:
                    return
                conn.busy = True
                try:
                    debug = log.isEnabledFor(logging.DEBUG)
                    started = time.perf_counter() if debug else 0.0
                    control = is_control_frame(body)
                    if control:
                        reply = self._control(conn, body)
                    else:
                        reply = self._exchange_blocking(conn, context, body)
                    if not conn.send(self._frame(conn, reply)):
                        log.debug("connection %d: peer gone before the reply", conn.number)
                        return
                    if debug:
                        _log_answer(conn, control, body, reply, started)
                finally:
                    conn.busy = False
        finally:
            conn.close()

    def _next_frame_blocking(self, conn: ThreadConnection) -> bytes | None:
        try:
            return read_frame_buffered(conn.stream, max_size=self.settings.max_frame_size)
        except FrameTooLargeError as exc:
            log.warning("connection %d: %s; closing it", conn.number, exc)
            conn.send(encode_frame(encode_error(ErrorCode.FRAME_TOO_LARGE, str(exc))))
        except FrameError as exc:
            log.warning("connection %d: %s", conn.number, exc)
        except OSError:  # reset by the peer, or shut down by the shutdown
            pass
        return None

    def _exchange_blocking(
        self, conn: ThreadConnection, base: contextvars.Context, body: bytes
    ) -> bytes:
        value, refused = self._prepare(conn, body)
        if refused is not None:
            return refused
        try:
            request = self.slots.acquire_blocking(conn.number)
        except NotReadyError as exc:
            return _refused(conn, exc)
        context = base.copy()
        reporter = BlockingProgress(conn) if conn.progress else None
        context.run(_reporter.set, reporter)
        try:
            result = context.run(run_sync, self.handler, value)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - becomes an error frame
            return self._raised(conn, exc)
        finally:
            if reporter is not None:
                reporter.close()
            self.slots.release(request)
        return self._result(conn, value, result)

    async def _shutdown_threads(
        self, listener: socket.socket, background: list[asyncio.Task[None]], grace: float | None
    ) -> bool:
        self._stopping = True
        grace = self.settings.shutdown_grace if grace is None else grace
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        listener.close()  # stop accepting; existing connections stay
        for conn in list(self._threads):
            if not conn.busy:
                conn.hang_up()  # its thread, waiting for a frame, sees the end and ends
        abandoned = False
        if self._threads:
            busy = sum(c.busy for c in self._threads)
            log.info("shutting down: waiting for %d request(s) in flight", busy)
            _, pending = await asyncio.wait({c.ended for c in self._threads}, timeout=grace)
            if pending:
                log.warning(
                    "grace period of %.1fs over: dropping %d connection(s)", grace, len(pending)
                )
                abandoned = True
                for conn in list(self._threads):
                    conn.hang_up()  # no reply: the sidecar redelivers
        self._stopped()
        return abandoned

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        """A connection on the loop: streams whose reader watches the requests (see
        :func:`~asya_runtime.watch.run_watched`)."""
        loop = asyncio.get_running_loop()
        return asyncio.StreamReaderProtocol(
            WatchedReader(loop=loop), self._on_connection, loop=loop
        )

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
            if not isinstance(reader, WatchedReader):  # pragma: no cover - _protocol makes them
                raise TypeError(f"connection {conn.number}: not a WatchedReader: {reader!r}")
            await self._serve_connection(conn, reader, writer)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Dropped by _shutdown, which owns these tasks and waits for them: end quietly
            # (asyncio logs a connection task that ends cancelled as an error).
        finally:
            del self._connections[task]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_connection(
        self, conn: _Connection, reader: WatchedReader, writer: asyncio.StreamWriter
    ) -> None:
        while not self._stopping:
            body = await self._next_frame(conn, reader)
            if body is None:
                return
            conn.busy = True
            try:
                if not await self._answer(conn, reader, body):
                    return
            finally:
                conn.busy = False

    async def _next_frame(self, conn: _Connection, reader: asyncio.StreamReader) -> bytes | None:
        """The next request or control frame; None when the connection is to end."""
        try:
            return await read_frame(reader, max_size=self.settings.max_frame_size)
        except FrameTooLargeError as exc:
            log.warning("connection %d: %s; closing it", conn.number, exc)
            await self._send(conn, encode_error(ErrorCode.FRAME_TOO_LARGE, str(exc)))
        except FrameError as exc:
            log.warning("connection %d: %s", conn.number, exc)
        except ConnectionError:
            pass
        return None

    async def _answer(self, conn: _Connection, reader: WatchedReader, body: bytes) -> bool:
        """Answer one frame; False when the connection is to end."""
        started = time.perf_counter()
        control = is_control_frame(body)
        if control:
            reply = self._control(conn, body)
        else:
            answer = await self._exchange(conn, reader, body)
            if answer is None:
                return False  # abandoned: the sidecar closed the connection
            reply = answer
        if not await self._send_frame(conn, self._frame(conn, reply)) or conn.closing:
            return False
        if log.isEnabledFor(logging.DEBUG):
            _log_answer(conn, control, body, reply, started)
        return True

    def _frame(self, conn: Negotiated, reply: bytes) -> bytes:
        try:
            return encode_frame(reply, max_size=self.settings.max_frame_size)
        except FrameTooLargeError as exc:
            log.warning("connection %d: result %s", conn.number, exc)
            return encode_frame(encode_error(ErrorCode.FRAME_TOO_LARGE, f"result {exc}"))

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

    def _control(self, conn: Negotiated, body: bytes) -> bytes:
        try:
            request = decode_control(body)
        except ProtocolError as exc:
            return encode_error(ErrorCode.PROTOCOL_ERROR, str(exc))
        if request.op == "ping":
            readiness = self.slots.readiness()
            return encode_ok("pong") if readiness.ready else not_ready_reply(readiness)
        spec = self.handler.batch
        supported = set(SUPPORTED_FEATURES)
        if spec is not None:
            supported.add(Feature.BATCH)
        if self.handler.streaming:
            supported.add(Feature.PARTIAL)
        agreed = sorted(f for f in supported if f.value in request.features)
        conn.progress = Feature.PROGRESS in agreed
        conn.envelope = Feature.ENVELOPE in agreed
        conn.batch = Feature.BATCH in agreed
        conn.partial = Feature.PARTIAL in agreed
        return encode_ok(
            HelloResult(
                protocol=PROTOCOL_VERSION,
                mode=self.settings.mode,
                features=tuple(f.value for f in agreed),
                runtime=f"asya-runtime {__version__}",
                batch=spec.limits() if spec is not None and conn.batch else None,
            )
        )

    def _prepare(self, conn: Negotiated, body: bytes) -> tuple[Any, bytes | None]:
        """The request's value (a list of payloads for a batch handler), or the error reply: a
        bad request, or an envelope before the sidecar negotiated envelopes."""
        if self._envelopes and not conn.envelope:
            return None, encode_error(
                ErrorCode.PROTOCOL_ERROR,
                "this runtime is in envelope mode: the sidecar must negotiate the 'envelope' "
                "feature with a hello frame first",
            )
        spec = self.handler.batch
        try:
            # Depth and UTF-8 are checked before decoding: a request nested too deep is a
            # parse_error like any bad JSON, and the connection stays open for the next one.
            if not conn.batch:
                value = decode_request(body, max_depth=self._depth)
                return ([value] if spec is not None else value), None
            items = decode_batch_request(body, max_depth=self._depth)
        except EnvelopeError as exc:
            log.warning("connection %d: %s", conn.number, exc)
            return None, encode_error(ErrorCode.PARSE_ERROR, str(exc))
        except ProtocolError as exc:
            return None, encode_error(ErrorCode.PROTOCOL_ERROR, str(exc))
        if spec is not None and len(items) > spec.max_size:
            message = (
                f"a batch of {len(items)} items exceeds the handler's max_size {spec.max_size}"
            )
            return None, encode_error(ErrorCode.PROTOCOL_ERROR, message)
        return items, None

    async def _exchange(
        self, conn: _Connection, reader: WatchedReader, body: bytes
    ) -> bytes | None:
        """The reply to one request, or None when the sidecar abandoned it."""
        value, refused = self._prepare(conn, body)
        if refused is not None:
            return refused
        try:
            request = await self.slots.acquire(conn.number)
        except NotReadyError as exc:
            return _refused(conn, exc)
        ended = False
        try:
            reply = await self._run(conn, reader, request, value)
            ended = True
            return reply
        finally:
            # Cancelled (shutdown): a handler thread may run on, but nobody waits for it now.
            self.slots.release(request, ended=ended)

    async def _run(
        self, conn: _Connection, reader: WatchedReader, request: Request, value: Any
    ) -> bytes | None:
        context = contextvars.copy_context()
        reporter = ProgressReporter(conn.writer) if conn.progress else None
        context.run(_reporter.set, reporter)
        emit = self._partials_to(conn) if conn.partial else None
        work = call_handler(
            self.handler, value, executor=self._executor, context=context, emit=emit
        )
        try:
            result = await run_watched(
                work,
                reader,
                timeout=self.settings.runtime_timeout,
                on_stuck=lambda: self.slots.mark_stuck(request),
                on_extra=lambda: _protocol_broken(conn),
            )
        except Abandoned:
            log.warning(
                "connection %d: the sidecar abandoned the request after %.3fs (it timed out or "
                "went away): the async handler was cancelled",
                conn.number,
                time.monotonic() - request.started,
            )
            return None
        except HandlerTimeout:
            timeout = self.settings.runtime_timeout
            log.warning("connection %d: handler cancelled after %gs", conn.number, timeout)
            return encode_error(
                ErrorCode.TIMEOUT,
                f"the handler ran past ASYA_RUNTIME_TIMEOUT ({timeout:g}s) and was cancelled",
            )
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - becomes an error frame
            return self._raised(conn, exc)
        finally:
            if reporter is not None:
                reporter.close()
        return self._result(conn, value, result)

    def _raised(self, conn: Negotiated, exc: BaseException) -> bytes:
        log.warning("connection %d: handler raised %s: %s", conn.number, type(exc).__name__, exc)
        return error_reply_for(exc, traceback_limit=self.settings.traceback_limit)

    def _result(self, conn: Negotiated, value: Any, result: Any) -> bytes:
        if self.handler.batch is None:
            return ok_reply_for(result)
        return batch_reply(
            result,
            len(value),
            batched=conn.batch,
            error_for=lambda e: error_reply_for(e, traceback_limit=self.settings.traceback_limit),
        )

    def _partials_to(self, conn: _Connection) -> Callable[[Any], Awaitable[None]]:
        """Sends a streaming handler's partial results on ``conn``, each written (and drained:
        a sidecar that reads slowly slows the handler down) before the next step runs."""
        limit = self.settings.max_frame_size

        async def emit(value: Any) -> None:
            try:
                body = encode_partial(value)
            except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
                raise AsyaError(
                    ErrorCode.SERIALIZATION_ERROR,
                    f"a partial result cannot be encoded as JSON: {exc}",
                    details={"type": type(value).__name__},
                ) from None
            try:
                frame = encode_frame(body, max_size=limit)
            except FrameTooLargeError as exc:
                raise AsyaError(
                    ErrorCode.FRAME_TOO_LARGE, f"a partial result {exc}", retryable=False
                ) from None
            if conn.writer.is_closing():
                raise Abandoned()
            try:
                conn.writer.write(frame)
                await conn.writer.drain()
            except ConnectionError:
                raise Abandoned() from None

        return emit


def _refused(conn: Negotiated, exc: NotReadyError) -> bytes:
    log.warning("connection %d: request refused: not ready: %s", conn.number, exc)
    return not_ready_reply(exc.readiness)


def _log_answer(conn: Negotiated, control: bool, body: bytes, reply: bytes, started: float) -> None:
    log.debug(
        "connection %d: %s, %d bytes in, %d bytes out, %.2f ms",
        conn.number,
        "control" if control else "request",
        len(body),
        len(reply),
        (time.perf_counter() - started) * 1000,
    )


def _protocol_broken(conn: _Connection) -> None:
    log.warning(
        "connection %d: the sidecar sent data before the reply (requests are not pipelined); "
        "the connection is closed after this reply",
        conn.number,
    )
    conn.closing = True
