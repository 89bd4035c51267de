from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asya_protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameTooLargeError,
    IncompleteFrameError,
    encode_frame,
    read_frame,
    read_frame_blocking,
    read_frame_buffered,
    write_frame,
    write_frame_blocking,
)
from asya_protocol.vectors import load_vectors

FRAME_VECTORS = load_vectors("frames")


def _read_all_async(data: bytes, max_size: int) -> list[bytes]:
    async def go() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        out = []
        while (frame := await read_frame(reader, max_size=max_size)) is not None:
            out.append(frame)
        return out

    return asyncio.run(go())


def _over_socket(data: bytes, read: Callable[[socket.socket], list[bytes]]) -> list[bytes]:
    """``read`` the frames of ``data`` from the far end of a socket pair closed after it."""
    left, right = socket.socketpair()
    try:
        left.sendall(data)
        left.shutdown(socket.SHUT_WR)
        return read(right)
    finally:
        left.close()
        right.close()


def _read_all_blocking(data: bytes, max_size: int) -> list[bytes]:
    def read(sock: socket.socket) -> list[bytes]:
        return list(iter(lambda: read_frame_blocking(sock, max_size=max_size), None))

    return _over_socket(data, read)


def _read_all_buffered(data: bytes, max_size: int) -> list[bytes]:
    def read(sock: socket.socket) -> list[bytes]:
        with sock.makefile("rb") as stream:
            return list(iter(lambda: read_frame_buffered(stream, max_size=max_size), None))

    return _over_socket(data, read)


@pytest.mark.parametrize(
    "reader",
    [_read_all_async, _read_all_blocking, _read_all_buffered],
    ids=["async", "blocking", "buffered"],
)
@pytest.mark.parametrize("vector", FRAME_VECTORS, ids=lambda v: v["name"])
def test_frame_vector(vector: dict[str, Any], reader: Any) -> None:
    data = bytes.fromhex(vector["hex"])
    max_size = vector.get("max_size", DEFAULT_MAX_FRAME_SIZE)
    if "error" in vector:
        error = {"incomplete": IncompleteFrameError, "too_large": FrameTooLargeError}
        with pytest.raises(error[vector["error"]]):
            reader(data, max_size)
    else:
        assert [f.decode() for f in reader(data, max_size)] == vector["frames"]


def test_write_refuses_oversized_frame() -> None:
    with pytest.raises(FrameTooLargeError) as info:
        encode_frame(b"x" * 11, max_size=10)
    assert info.value.size == 11
    assert info.value.limit == 10


def test_incomplete_error_says_where() -> None:
    with pytest.raises(IncompleteFrameError, match="frame body: expected 5 bytes, got 2"):
        _read_all_blocking(b"\x00\x00\x00\x05ab", DEFAULT_MAX_FRAME_SIZE)


async def test_async_roundtrip_over_unix_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "s.sock")
    got: list[bytes] = []
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (frame := await read_frame(reader)) is not None:
            got.append(frame)
            await write_frame(writer, frame[::-1])
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_unix_server(serve, path)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        for body in (b"abc", b"", b"x" * 100_000):
            await write_frame(writer, body)
            assert await read_frame(reader) == body[::-1]
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        server.close()
        await server.wait_closed()
    assert got == [b"abc", b"", b"x" * 100_000]


@settings(max_examples=60)
@given(
    bodies=st.lists(st.binary(max_size=300), max_size=6),
    cuts=st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_frames_survive_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)

    async def go() -> list[bytes]:
        reader = asyncio.StreamReader()
        pos, i = 0, 0
        while pos < len(stream):
            step = cuts[i % len(cuts)]
            reader.feed_data(stream[pos : pos + step])
            pos += step
            i += 1
        reader.feed_eof()
        out = []
        while (frame := await read_frame(reader)) is not None:
            out.append(frame)
        return out

    assert asyncio.run(go()) == bodies


@given(st.binary(min_size=1, max_size=3))
def test_truncated_header_is_incomplete(prefix: bytes) -> None:
    with pytest.raises(IncompleteFrameError):
        _read_all_blocking(prefix, DEFAULT_MAX_FRAME_SIZE)


def test_blocking_write_then_read() -> None:
    left, right = socket.socketpair()
    try:
        write_frame_blocking(left, b'{"a":1}')
        assert read_frame_blocking(right) == b'{"a":1}'
    finally:
        left.close()
        right.close()
