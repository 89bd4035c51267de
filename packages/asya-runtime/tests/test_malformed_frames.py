"""Property-based: whatever bytes a client sends, the runtime answers or hangs up, and lives."""

from __future__ import annotations

import socket
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from asya_protocol import (
    BlockingRuntimeClient,
    FrameError,
    OkReply,
    decode_reply,
    read_frame_blocking,
)
from asya_testing.processes import ping

frames = st.one_of(
    st.binary(max_size=64),  # arbitrary garbage, often a huge length prefix
    st.binary(max_size=200).map(lambda b: len(b).to_bytes(4, "big") + b),  # well framed junk
    st.binary(min_size=1, max_size=50).map(lambda b: (len(b) + 10).to_bytes(4, "big") + b),
)


def survives(path: str, data: list[bytes]) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
        sock.sendall(b"".join(data))
        sock.shutdown(socket.SHUT_WR)
        # Every reply that comes back is a well-formed protocol reply.
        while True:
            try:
                frame = read_frame_blocking(sock)
            except (FrameError, ConnectionError):
                break
            if frame is None:
                break
            decode_reply(frame)
    finally:
        sock.close()
    assert ping(path)
    with BlockingRuntimeClient(path) as client:
        reply = client.call({"op": "echo", "value": "still here"})
    assert isinstance(reply, OkReply)
    assert reply.result_value() == "still here"


async def test_runtime_survives_any_bytes(serve: Any) -> None:
    """One in-process server takes every example (the examples run in serve's worker thread)."""

    def check(path: str) -> None:
        @settings(max_examples=120, deadline=None)
        @given(data=st.lists(frames, min_size=1, max_size=4))
        def one(data: list[bytes]) -> None:
            survives(path, data)

        one()

    await serve("asya_runtime.conformance:handler", check, env={"ASYA_MAX_FRAME_SIZE": "65536"})
