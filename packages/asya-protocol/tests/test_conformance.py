"""The conformance checker catches a runtime that breaks the framing (its negative cases).

The runtimes here are small blocking servers written against this package alone, as a
third-party runtime would be; asya-runtime's own run of the checker is in its tests."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from asya_protocol import (
    FrameError,
    ProtocolError,
    decode_request,
    encode_error,
    encode_ok,
    is_control_frame,
    read_frame_blocking,
    write_frame_blocking,
)
from asya_protocol.conformance import run_checks


def _answer(payload: Any) -> bytes:
    """The conformance handler, as far as the checks below need it."""
    match payload.get("op"):
        case "echo":
            return encode_ok(payload["value"])
        case "fanout":
            return encode_ok(payload["values"])
        case "fail":
            return encode_error(payload["code"], payload["message"])
        case "raise":
            return encode_error("handler_error", payload["message"])
        case op:
            return encode_error("unknown_op", f"no op {op!r}")


@contextmanager
def runtime(*, replies: int) -> Iterator[str]:
    """A base-protocol runtime that sends every final reply ``replies`` times."""
    directory = tempfile.mkdtemp(prefix="asya-conf-")
    path = os.path.join(directory, "runtime.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while (frame := read_frame_blocking(conn)) is not None:
                    if is_control_frame(frame):
                        reply = encode_error("parse_error", "control frames are not JSON")
                    else:
                        try:
                            reply = _answer(decode_request(frame))
                        except ProtocolError as exc:
                            reply = encode_error("parse_error", str(exc))
                    for _ in range(replies):
                        write_frame_blocking(conn, reply)
            except (OSError, FrameError):
                return  # the checker hung up or sent a broken frame (its own checks) on purpose

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the test is over
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield path
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(5)
        shutil.rmtree(directory)


def results(path: str) -> dict[str, str | None]:
    """Check name -> failure detail (None when the check passed)."""
    report = run_checks(path, timeout=2.0)
    return {r.name: None if r.passed else r.detail for r in report.results}


@pytest.mark.parametrize("replies", [1, 2])
def test_one_final_frame_per_request(replies: int) -> None:
    with runtime(replies=replies) as path:
        got = results(path)
    detail = got["one-final-frame-per-request"]
    if replies == 1:
        assert detail is None
        assert got["echo-values"] is None
        assert got["many-exchanges-on-one-connection"] is None
    else:
        assert detail is not None
        assert "arrived after the reply to 'echo'" in detail
        assert "exactly one final frame per request" in detail
