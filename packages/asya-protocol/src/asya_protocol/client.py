"""A small blocking client for the runtime socket protocol (tests, tools, the conformance check)."""

from __future__ import annotations

import json
import socket
from typing import Any

from .errors import ProtocolError, ReplyError
from .framing import DEFAULT_MAX_FRAME_SIZE, read_frame_blocking, write_frame_blocking
from .messages import (
    ControlRequest,
    HelloResult,
    OkReply,
    PartialReply,
    ProgressReply,
    Reply,
    decode_reply,
    encode_control,
)

__all__ = ["BlockingRuntimeClient", "ReplyError"]


class BlockingRuntimeClient:
    """One connection to a runtime. ``call`` sends a payload and returns the final reply."""

    def __init__(
        self, path: str, *, timeout: float = 10.0, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self.max_frame_size = max_frame_size
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise

    def __enter__(self) -> BlockingRuntimeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, body: bytes) -> None:
        write_frame_blocking(self.sock, body, max_size=self.max_frame_size)

    def reply(self) -> Reply:
        frame = read_frame_blocking(self.sock, max_size=self.max_frame_size)
        if frame is None:
            raise ReplyError("runtime closed the connection instead of replying")
        try:
            return decode_reply(frame)
        except ProtocolError as exc:
            raise ReplyError(str(exc)) from exc

    def final(self, body: bytes) -> tuple[Reply, list[ProgressReply]]:
        """Send a request; return its final reply and the progress frames that came first.
        A partial result here is a :class:`ReplyError` (see :meth:`stream`)."""
        reply, progress, partials = self.stream(body)
        if partials:
            raise ReplyError("partial results on a connection that did not negotiate them")
        return reply, progress

    def stream(self, body: bytes) -> tuple[Reply, list[ProgressReply], list[PartialReply]]:
        """Send a request; return its final reply, and the progress frames and partial results
        that came first (each in order)."""
        self.send(body)
        progress: list[ProgressReply] = []
        partials: list[PartialReply] = []
        while True:
            reply = self.reply()
            if isinstance(reply, ProgressReply):
                progress.append(reply)
            elif isinstance(reply, PartialReply):
                partials.append(reply)
            else:
                return reply, progress, partials

    def call(self, payload: Any) -> Reply:
        """Send ``payload`` as JSON; progress frames here are a protocol error."""
        reply, progress = self.final(json.dumps(payload).encode())
        if progress:
            raise ReplyError("progress frames on a connection that did not negotiate them")
        return reply

    def hello(self, *features: str) -> HelloResult | None:
        """Negotiate features; ``None`` for a base-protocol runtime (it answers parse_error)."""
        self.send(encode_control(ControlRequest(op="hello", features=features)))
        reply = self.reply()
        if not isinstance(reply, OkReply):
            return None
        import msgspec  # noqa: PLC0415 - msgspec is this package's only dependency anyway

        return msgspec.json.decode(reply.result, type=HelloResult)
