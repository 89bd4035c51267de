"""Progress frames of one request, written on the loop whoever reports them."""

from __future__ import annotations

import asyncio

from asya_protocol import encode_frame, encode_progress

from .threads import call_soon_threadsafe_unless_closed

__all__ = ["ProgressReporter"]


class ProgressReporter:
    """Writes progress frames for one request, from the loop thread or a handler thread."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._open = True

    def __call__(self, fraction: float | None, message: str | None) -> None:
        if self._open:
            frame = encode_frame(encode_progress(fraction, message))
            call_soon_threadsafe_unless_closed(self._loop, self._write, frame)

    def _write(self, frame: bytes) -> None:
        # Checked again on the loop: a report scheduled before close() is still written, in
        # order, before the final frame; one from a thread that outlived the request is not.
        if self._open and not self._writer.is_closing():
            self._writer.write(frame)

    def close(self) -> None:
        self._loop.call_soon(self._close)

    def _close(self) -> None:
        self._open = False
