"""Length-prefixed frames on a stream socket.

A frame is a 4-byte big-endian unsigned length ``N`` followed by ``N`` bytes (UTF-8 JSON in the
runtime protocol). An asyncio variant and blocking ones (a plain :mod:`socket`, or a buffered
binary stream over one) are here, so a third-party runtime needs nothing but this module and
msgspec.

Reading returns ``None`` on a clean end of stream at a frame boundary; an end of stream inside a
frame raises :class:`IncompleteFrameError`; a length over the limit raises
:class:`FrameTooLargeError` *before* any of the body is read.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import BinaryIO

from .errors import FrameTooLargeError, IncompleteFrameError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "encode_frame",
    "read_frame",
    "read_frame_blocking",
    "read_frame_buffered",
    "write_frame",
    "write_frame_blocking",
]

HEADER_SIZE = 4
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
"""64 MiB: the default bound on one frame, in both directions."""

_HEADER = struct.Struct(">I")


def encode_frame(body: bytes, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Prefix ``body`` with its length. Raises :class:`FrameTooLargeError` over ``max_size``."""
    if len(body) > max_size:
        raise FrameTooLargeError(len(body), max_size)
    return _HEADER.pack(len(body)) + body


def _check_length(length: int, max_size: int) -> int:
    if length > max_size:
        raise FrameTooLargeError(length, max_size)
    return length


async def read_frame(
    reader: asyncio.StreamReader, *, max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes | None:
    """Read one frame body, or ``None`` if the stream ended cleanly before a new frame."""
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise IncompleteFrameError(HEADER_SIZE, len(exc.partial), in_header=True) from None
    length = _check_length(_HEADER.unpack(header)[0], max_size)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise IncompleteFrameError(length, len(exc.partial), in_header=False) from None


async def write_frame(
    writer: asyncio.StreamWriter, body: bytes, *, max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> None:
    """Write one frame and wait until the transport's buffer drains."""
    writer.write(encode_frame(body, max_size=max_size))
    await writer.drain()


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    """Up to ``count`` bytes: fewer only if the peer closed the stream."""
    buf = bytearray(count)
    got = 0
    with memoryview(buf) as view:
        while got < count:
            n = sock.recv_into(view[got:], count - got)
            if n == 0:
                break
            got += n
    return bytes(buf) if got == count else bytes(buf[:got])


def _read_frame_with(read: Callable[[int], bytes], max_size: int) -> bytes | None:
    """A frame from ``read(n)``, which gives ``n`` bytes, fewer only at the end of the stream."""
    header = read(HEADER_SIZE)
    if not header:
        return None
    if len(header) < HEADER_SIZE:
        raise IncompleteFrameError(HEADER_SIZE, len(header), in_header=True)
    length = _check_length(_HEADER.unpack(header)[0], max_size)
    body = read(length)
    if len(body) < length:
        raise IncompleteFrameError(length, len(body), in_header=False)
    return body


def read_frame_blocking(
    sock: socket.socket, *, max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes | None:
    """Blocking :func:`read_frame` on a connected stream socket."""
    return _read_frame_with(lambda count: _recv_exactly(sock, count), max_size)


def read_frame_buffered(
    stream: BinaryIO, *, max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes | None:
    """Blocking :func:`read_frame` from a buffered binary stream (``sock.makefile("rb")``): a
    small frame's header and body come in one ``recv``, where :func:`read_frame_blocking` makes
    two."""
    return _read_frame_with(stream.read, max_size)


def write_frame_blocking(
    sock: socket.socket, body: bytes, *, max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> None:
    """Blocking :func:`write_frame` on a connected stream socket."""
    sock.sendall(encode_frame(body, max_size=max_size))
