"""The sidecar's side of the socket: a pool of persistent connections to the runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from asya_protocol import (
    MAX_ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    PROTOCOL_VERSION,
    Backoff,
    BatchLimits,
    BatchOkReply,
    ControlRequest,
    EnvelopeError,
    ErrorCode,
    ErrorReply,
    Feature,
    FrameError,
    FrameTooLargeError,
    HandlerMode,
    HelloResult,
    OkReply,
    PartialReply,
    ProgressReply,
    ProtocolError,
    decode_batch_reply,
    decode_reply,
    encode_batch_request,
    encode_control,
    encode_frame,
    read_frame,
)

from .errors import RuntimeUnavailable

__all__ = ["PartialCallback", "ProgressCallback", "RuntimeClient", "RuntimeInfo", "RuntimeState"]

log = logging.getLogger("asya_sidecar.runtime")

ProgressCallback = Callable[[ProgressReply], Awaitable[None]]
PartialCallback = Callable[[PartialReply], Awaitable[None]]

POLL_INITIAL_DELAY = 0.05
POLL_MAX_DELAY = 1.0
"""Waiting for the runtime (at start, after it restarts): pings at most a second apart."""


@dataclass(frozen=True)
class RuntimeInfo:
    """What the runtime said in its hello (a base runtime: payload mode, no features)."""

    mode: HandlerMode = HandlerMode.PAYLOAD
    features: frozenset[str] = frozenset()
    name: str = "base-protocol runtime"
    batch: BatchLimits | None = None
    """The handler's batch limits, when the ``batch`` feature was agreed."""


@dataclass(frozen=True)
class RuntimeState:
    """What a ping found: whether the runtime answered, and whether it is ready.

    A runtime is ready unless it answers ``not_ready`` (a handler holds its slot past the
    timeout): ``pong`` and a base runtime's ``parse_error`` both mean ready.
    """

    answered: bool
    ready: bool
    reason: str = ""


NOT_ANSWERING = RuntimeState(answered=False, ready=False, reason="not answering")


Final = OkReply | ErrorReply | BatchOkReply
"""A final reply: to a single request, or to a batch request."""


class _Reader(asyncio.StreamReader):
    """A stream reader that can tell, without waiting, what already came after the frames
    read so far."""

    def pending(self) -> bytes | None:
        """``None`` for nothing, ``b""`` for a closed stream, else some of the extra bytes
        (the connection is being dropped); a broken connection's error is raised."""
        error = self.exception()
        if error is not None:
            raise error
        # The unread bytes: StreamReader's own buffer (a bytearray since Python 3.4; typeshed
        # leaves it undeclared). Asking through read(1) under a zero timeout instead costs a
        # future, a timer and a cancellation on every exchange.
        buffered: bytearray = self._buffer  # type: ignore[attr-defined]
        if buffered:
            return bytes(buffered[:1])
        return b"" if self.at_eof() else None


async def _connect(path: str, limit: int = 2**16) -> tuple[_Reader, asyncio.StreamWriter]:
    """``asyncio.open_unix_connection`` with a :class:`_Reader`."""
    loop = asyncio.get_running_loop()
    reader = _Reader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_unix_connection(lambda: protocol, path)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class _Conn:
    def __init__(self, reader: _Reader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.info = RuntimeInfo()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


Decode = Callable[[_Conn, bytes], Final | ProgressReply | PartialReply]


class RuntimeClient:
    """Exchanges with the runtime, each on a pooled connection (at most ``size`` open)."""

    def __init__(
        self,
        socket_path: str,
        *,
        size: int,
        max_frame_size: int,
        batch: bool = False,
        partial: bool = False,
    ) -> None:
        self.socket_path = socket_path
        self._features = (
            Feature.PROGRESS.value,
            Feature.ENVELOPE.value,
            *((Feature.BATCH.value,) if batch else ()),
            *((Feature.PARTIAL.value,) if partial else ()),
        )
        self.max_frame_size = max_frame_size
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(size)
        self.info = RuntimeInfo()

    async def _open(self) -> _Conn:
        try:
            reader, writer = await _connect(self.socket_path)
        except OSError as exc:
            raise RuntimeUnavailable(f"cannot connect to {self.socket_path}: {exc}") from exc
        conn = _Conn(reader, writer)
        try:
            hello = ControlRequest(
                op="hello",
                protocol=PROTOCOL_VERSION,
                features=self._features,
            )
            reply = await self._roundtrip(conn, encode_control(hello))
            if isinstance(reply, OkReply):
                result = msgspec.json.decode(reply.result, type=HelloResult)
                features = frozenset(result.features)
                conn.info = RuntimeInfo(
                    mode=result.mode,
                    features=features,
                    name=result.runtime,
                    batch=result.batch if Feature.BATCH.value in features else None,
                )
            # An error reply (parse_error) means a base-protocol runtime: keep the defaults.
        except (RuntimeUnavailable, msgspec.DecodeError, ProtocolError) as exc:
            await conn.close()
            raise RuntimeUnavailable(f"runtime hello failed: {exc}") from exc
        except BaseException:
            conn.writer.close()  # cancelled (an abandoned request): never leaked
            raise
        self.info = conn.info
        return conn

    async def _roundtrip(self, conn: _Conn, body: bytes) -> OkReply | ErrorReply:
        try:
            conn.writer.write(encode_frame(body, max_size=self.max_frame_size))
            await conn.writer.drain()
            while True:
                frame = await read_frame(conn.reader, max_size=self.max_frame_size)
                if frame is None:
                    raise RuntimeUnavailable("runtime closed the connection mid-request")
                reply = decode_reply(frame)
                if not isinstance(reply, ProgressReply | PartialReply):
                    return reply
        except (ConnectionError, FrameError, OSError) as exc:
            raise RuntimeUnavailable(f"runtime connection failed: {exc}") from exc

    async def probe(self, timeout: float = 2.0) -> RuntimeState:
        """Ping the runtime on a fresh connection: does it answer, and is it ready?"""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await _connect(self.socket_path)
                conn = _Conn(reader, writer)
                try:
                    reply = await self._roundtrip(conn, encode_control(ControlRequest(op="ping")))
                finally:
                    await conn.close()
        except (TimeoutError, OSError, RuntimeUnavailable, ProtocolError):
            return NOT_ANSWERING
        if isinstance(reply, ErrorReply) and reply.error == ErrorCode.NOT_READY:
            return RuntimeState(answered=True, ready=False, reason=reply.message)
        return RuntimeState(answered=True, ready=True)

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when the runtime answers a ping on a fresh connection (base runtimes too),
        ready or not."""
        return (await self.probe(timeout)).answered

    async def wait_answering(self, timeout: float | None = None) -> bool:
        """Ping until the runtime answers and is ready (True), polling with a jittered
        :class:`Backoff` of at most :data:`POLL_MAX_DELAY`; False once ``timeout`` seconds
        have passed without."""
        backoff = Backoff(initial=POLL_INITIAL_DELAY, maximum=POLL_MAX_DELAY)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (await self.probe()).ready:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await backoff.sleep()
        return True

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the runtime answers, or raise :class:`RuntimeUnavailable` naming the path."""
        if not await self.wait_answering(timeout):
            raise RuntimeUnavailable(
                f"no runtime answered on {self.socket_path} within {timeout:g}s "
                "(ASYA_RUNTIME_WAIT); is the runtime container running with the same "
                "ASYA_SOCKET_PATH?"
            )
        # Learn the runtime's mode and features now, on a pooled connection.
        async with self._slots:
            conn = await self._open()
            self._idle.append(conn)

    async def call(
        self,
        request: bytes,
        *,
        timeout: float,
        on_progress: ProgressCallback | None = None,
        on_partial: PartialCallback | None = None,
    ) -> OkReply | ErrorReply:
        """One exchange. Raises ``TimeoutError`` or :class:`RuntimeUnavailable`.

        A connection that timed out or failed is closed, never reused (a late reply would be
        read as the answer to the next request). So is one that carried anything after its final
        frame, or a reply over the frame limit: see :meth:`_exchange`. Partial results go to
        ``on_partial`` as they come (dropped without one).
        """
        reply = await self._call(request, _decode, timeout, on_progress, on_partial)
        assert not isinstance(reply, BatchOkReply)  # noqa: S101 - _decode never makes one
        return reply

    async def call_batch(
        self,
        items: Sequence[bytes],
        *,
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> BatchOkReply | ErrorReply:
        """One batch exchange (the connection negotiated ``batch``), as :meth:`call`."""
        body = encode_batch_request(items)
        batch = await self._call(body, _decode_batch, timeout, on_progress, None)
        assert not isinstance(batch, OkReply)  # noqa: S101 - _decode_batch never makes one
        return batch

    async def _call(
        self,
        request: bytes,
        decode: Decode,
        timeout: float,
        on_progress: ProgressCallback | None,
        on_partial: PartialCallback | None,
    ) -> Final:
        async with self._slots:
            conn = await self._take()
            reusable = False
            try:
                async with asyncio.timeout(timeout):
                    reply, reusable = await self._exchange(
                        conn, request, decode, (on_progress, on_partial)
                    )
                return reply
            finally:
                if reusable:
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def _take(self) -> _Conn:
        """An idle pooled connection that has received nothing since its last exchange, or a
        new one. Bytes on an idle connection are a reply nobody asked for (the runtime sent one
        frame too many): reading them as the next answer would shift every later result by one,
        so that connection is closed instead. So is one the runtime closed meanwhile."""
        while self._idle:
            conn = self._idle.pop()
            try:
                extra = conn.reader.pending()
            except (ConnectionError, OSError):
                extra = b""  # reset while idle: as good as closed
            if extra is None:
                return conn
            if extra:
                log.warning(
                    "the runtime sent data on an idle connection (a frame after a final reply); "
                    "connection discarded"
                )
            await conn.close()
        return await self._open()

    async def _exchange(
        self,
        conn: _Conn,
        request: bytes,
        decode: Decode,
        callbacks: tuple[ProgressCallback | None, PartialCallback | None],
    ) -> tuple[Final, bool]:
        """The reply, and whether the connection may carry the next exchange.

        A reply over the frame limit cannot be read past (its body is never read): it is a
        ``frame_too_large`` error reply, not retried, and the connection is dropped; the runtime
        is not considered down. Bytes already waiting after the final frame mean the runtime
        answered more than once: the reply cannot be trusted to belong to this request, so it
        becomes a ``protocol_error`` and the connection is dropped. So does a partial result on a
        connection that did not negotiate ``partial``.
        """
        try:
            conn.writer.write(encode_frame(request, max_size=self.max_frame_size))
            await conn.writer.drain()
            while True:
                try:
                    frame = await read_frame(conn.reader, max_size=self.max_frame_size)
                except FrameTooLargeError as exc:
                    return _reply_too_large(exc), False
                if frame is None:
                    raise RuntimeUnavailable("runtime closed the connection mid-request")
                reply = decode(conn, frame)
                if isinstance(reply, ProgressReply | PartialReply):
                    refused = await _interim(conn, reply, callbacks)
                    if refused is not None:
                        return refused, False
                    continue
                extra = conn.reader.pending()
                if extra:
                    return _extra_frame(), False
                return reply, extra is None
        except (ConnectionError, OSError) as exc:
            raise RuntimeUnavailable(f"runtime connection failed: {exc}") from exc
        except FrameError as exc:
            raise RuntimeUnavailable(f"runtime sent a broken frame: {exc}") from exc

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


async def _interim(
    conn: _Conn,
    reply: ProgressReply | PartialReply,
    callbacks: tuple[ProgressCallback | None, PartialCallback | None],
) -> ErrorReply | None:
    """Pass a frame before the final one on; the error that ends the exchange if it is refused."""
    on_progress, on_partial = callbacks
    if isinstance(reply, ProgressReply):
        if on_progress is not None:
            await on_progress(reply)
        return None
    if Feature.PARTIAL.value not in conn.info.features:
        return _unasked_partial()
    if on_partial is not None:
        await on_partial(reply)
    return None


def _depth(conn: _Conn) -> int:
    # In envelope mode a result is an envelope, which may nest two levels more.
    return MAX_ENVELOPE_DEPTH if conn.info.mode is HandlerMode.ENVELOPE else MAX_JSON_DEPTH


def _decode(conn: _Conn, frame: bytes) -> OkReply | ErrorReply | ProgressReply | PartialReply:
    return _decoded(lambda: decode_reply(frame, max_depth=_depth(conn)))


def _decode_batch(conn: _Conn, frame: bytes) -> BatchOkReply | ErrorReply | ProgressReply:
    return _decoded(lambda: decode_batch_reply(frame, max_depth=_depth(conn)))


T = TypeVar("T")


def _decoded(decode: Callable[[], T]) -> T | ErrorReply:
    try:
        return decode()
    except EnvelopeError as exc:
        # Not UTF-8, or nested past the limit: never published; error-end instead.
        return ErrorReply(error=ErrorCode.PARSE_ERROR, message=f"runtime result refused: {exc}")
    except ProtocolError as exc:
        return ErrorReply(error=ErrorCode.PROTOCOL_ERROR, message=f"bad runtime reply: {exc}")


def _reply_too_large(exc: FrameTooLargeError) -> ErrorReply:
    return ErrorReply(
        error=ErrorCode.FRAME_TOO_LARGE,
        message=f"the runtime's reply of {exc.size} bytes exceeds ASYA_MAX_FRAME_SIZE "
        f"({exc.limit} bytes)",
        retryable=False,  # the same input gives the same result: one run, then error-end
        details={"size": exc.size, "limit": exc.limit},
    )


def _unasked_partial() -> ErrorReply:
    return ErrorReply(
        error=ErrorCode.PROTOCOL_ERROR,
        message="the runtime sent a partial result on a connection that did not negotiate "
        "'partial'; the connection is dropped",
    )


def _extra_frame() -> ErrorReply:
    return ErrorReply(
        error=ErrorCode.PROTOCOL_ERROR,
        message="the runtime sent more after its final reply (two final frames for one request); "
        "the reply may belong to another request, so it is not used and the connection is dropped",
    )
