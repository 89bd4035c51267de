"""Property-based: whatever bytes a client sends, the runtime answers or hangs up, and lives."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asya_protocol import (
    BlockingRuntimeClient,
    FrameError,
    OkReply,
    decode_reply,
    read_frame_blocking,
)
from asya_testing.processes import ping, runtime_process

HERE = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def runtime_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_dir = tmp_path_factory.mktemp("logs")
    env = {"ASYA_MAX_FRAME_SIZE": "65536"}
    with runtime_process(
        "asya_runtime.conformance:handler", env=env, python_path=[HERE], log_dir=log_dir
    ) as (proc, path):
        yield path
        assert proc.alive(), proc.log()


frames = st.one_of(
    st.binary(max_size=64),  # arbitrary garbage, often a huge length prefix
    st.binary(max_size=200).map(lambda b: len(b).to_bytes(4, "big") + b),  # well framed junk
    st.binary(min_size=1, max_size=50).map(lambda b: (len(b) + 10).to_bytes(4, "big") + b),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.lists(frames, min_size=1, max_size=4))
def test_runtime_survives_any_bytes(runtime_path: str, data: list[bytes]) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(runtime_path)
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
    assert ping(runtime_path)
    with BlockingRuntimeClient(runtime_path) as client:
        reply = client.call({"op": "echo", "value": "still here"})
    assert isinstance(reply, OkReply)
    assert reply.result_value() == "still here"
