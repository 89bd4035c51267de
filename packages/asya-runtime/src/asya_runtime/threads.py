"""What a connection served by a thread of its own needs: ``def`` handlers are served so.

A ``def`` handler needs a thread. Serving its requests from the loop costs two hand-offs between
threads per request (the loop hands the request to a pool thread, which wakes the loop with the
result), each a wake-up and a hand-over of the GIL. Here the connection's own thread reads each
frame, calls the handler and writes the reply with blocking calls: no hand-off at all. The loop
still accepts the connections, watches the handlers' deadlines and runs the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from asya_protocol import encode_frame, encode_progress

__all__ = [
    "BlockingProgress",
    "Negotiated",
    "ThreadConnection",
    "call_soon_threadsafe_unless_closed",
]

_READ_BUFFER = 64 * 1024


@dataclass(eq=False)
class Negotiated:
    """A connection's number and what its hello agreed (all off until then)."""

    number: int
    busy: bool = False
    progress: bool = False
    envelope: bool = False
    batch: bool = False
    partial: bool = False
    closing: bool = False  # close after this reply: the peer broke the protocol


@dataclass(eq=False)
class ThreadConnection(Negotiated):
    """A connection served by its own thread. ``send`` is safe from any thread (a handler's
    own threads may report progress); ``ended`` is resolved on the loop when the thread ends."""

    sock: socket.socket = field(kw_only=True)
    ended: asyncio.Future[None] = field(kw_only=True)
    loop: asyncio.AbstractEventLoop = field(kw_only=True)
    stream: BinaryIO = field(init=False)
    _writing: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.stream = io.BufferedReader(socket.SocketIO(self.sock, "rb"), _READ_BUFFER)

    def send(self, frame: bytes) -> bool:
        """Write ``frame`` whole; False when the peer is gone."""
        try:
            with self._writing:
                self.sock.sendall(frame)
        except OSError:  # EPIPE, ECONNRESET, or the socket was shut down by the shutdown
            return False
        return True

    def hang_up(self) -> None:
        """End the connection for the peer now, from any thread: a thread blocked reading it
        sees the end of the stream. The thread closes the socket itself when it ends."""
        with contextlib.suppress(OSError):  # already shut down, or the peer went first
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """In the connection's thread, as it ends."""
        self.stream.close()
        self.sock.close()
        call_soon_threadsafe_unless_closed(self.loop, _resolve, self.ended)


def call_soon_threadsafe_unless_closed(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object
) -> bool:
    """``loop.call_soon_threadsafe(callback, *args)`` from a thread; False when the loop has
    closed meanwhile (the server is gone: nothing there waits for the callback any more)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        if not loop.is_closed():
            raise
        return False
    return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class BlockingProgress:
    """Progress frames of one request on a thread's connection, written at once, from the
    handler's thread or any other; none after :meth:`close` (the final reply comes next)."""

    def __init__(self, conn: ThreadConnection) -> None:
        self._conn = conn
        self._open = True
        self._lock = threading.Lock()

    def __call__(self, fraction: float | None, message: str | None) -> None:
        frame = encode_frame(encode_progress(fraction, message))
        with self._lock:
            if self._open and not self._conn.send(frame):
                self._open = False  # the peer is gone: the reply's write will say so

    def close(self) -> None:
        with self._lock:
            self._open = False
