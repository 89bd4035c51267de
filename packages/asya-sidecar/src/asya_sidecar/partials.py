"""A streaming handler's partial results, forwarded as ``partial`` step events within bounds.

Bounds (``ASYA_PARTIAL_MAX_BYTES``, ``ASYA_PARTIAL_INTERVAL``), per message:

- **Rate.** At most one event per interval. The first partial result goes out at once; those
  that arrive while the interval runs are published together when it ends, as one event whose
  ``chunks`` keep their order (and ``offset`` says how many came before), so nothing is
  reordered or lost.
- **Size.** One event carries at most ``max_bytes`` of chunks. While the pending chunks are full
  the sidecar stops reading the runtime's socket until they are published: a handler that
  produces faster than the bound is slowed down, not cut. A single partial result larger than
  ``max_bytes`` is replaced by the marker ``{"asya_dropped": {"reason": "too_large",
  "bytes": N, "limit": L}}`` in its place (logged once per message).

Every event is published confirmed (on the same channel as results), and the last ones before
the step's result is published, so a follower sees a step's partial results before its result.
:class:`PartialBuffer` is the pure part, :class:`PartialStream` carries it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from asya_protocol import PartialReply

from .errors import TransportError

__all__ = ["MARKER_KEY", "PartialBuffer", "PartialStream", "dropped_marker", "partial_stream"]

log = logging.getLogger("asya_sidecar")

MARKER_KEY = "asya_dropped"
_encoder = msgspec.json.Encoder()

Publish = Callable[[int, list[msgspec.Raw]], Awaitable[None]]
"""Publishes one event: the offset of its first chunk, and its chunks."""


def dropped_marker(size: int, limit: int) -> bytes:
    """What replaces a partial result of ``size`` bytes over the ``limit``."""
    return _encoder.encode({MARKER_KEY: {"reason": "too_large", "bytes": size, "limit": limit}})


@dataclass
class PartialBuffer:
    """The chunks waiting for the next event (pure: no I/O, no clock)."""

    max_bytes: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    offset: int = 0
    """Chunks taken (published) before the pending ones."""
    dropped: int = 0
    """Partial results replaced by the marker."""

    def admit(self, chunk: bytes) -> bytes:
        """The chunk as it will be published: itself, or the marker when it is too large."""
        if len(chunk) <= self.max_bytes:
            return chunk
        self.dropped += 1
        return dropped_marker(len(chunk), self.max_bytes)

    def fits(self, chunk: bytes) -> bool:
        """Whether ``chunk`` may join the pending ones (always, when none is pending)."""
        return not self.chunks or self.size + len(chunk) <= self.max_bytes

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)

    def take(self) -> tuple[int, list[bytes]]:
        """The pending chunks and the offset of the first; the buffer is then empty."""
        taken, offset = self.chunks, self.offset
        self.chunks, self.size = [], 0
        self.offset += len(taken)
        return offset, taken


class PartialStream:
    """Partial results of one exchange: :meth:`add` them as they come; :func:`partial_stream`
    publishes them within the bounds."""

    def __init__(self, publish: Publish, *, max_bytes: int, interval: float, what: str) -> None:
        self._publish = publish
        self._interval = interval
        self._what = what
        self.buffer = PartialBuffer(max_bytes)
        self.events = 0
        self.failed: TransportError | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._closed = asyncio.Event()

    async def add(self, reply: PartialReply) -> None:
        """Queue one partial result; waits while the pending ones are full."""
        if self.failed is not None:
            return  # the broker connection broke: the step's result will fail the same way
        dropped = self.buffer.dropped
        chunk = self.buffer.admit(bytes(reply.partial))
        if dropped == 0 and self.buffer.dropped == 1:
            log.warning(
                "%s: a partial result of %d bytes exceeds ASYA_PARTIAL_MAX_BYTES (%d): replaced "
                "by a marker (logged once per message)",
                self._what,
                len(reply.partial),
                self.buffer.max_bytes,
            )
        while not self.buffer.fits(chunk) and self.failed is None:
            self._room.clear()
            await self._room.wait()
        self.buffer.add(chunk)
        self._wake.set()

    async def pump(self) -> None:
        """Publish pending chunks, at most one event per interval, until closed and flushed."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            closing = self._closed.is_set()  # then nothing more comes: this takes the rest
            if self.buffer.chunks and self.failed is None:
                offset, chunks = self.buffer.take()
                self._room.set()
                try:
                    await self._publish(offset, [msgspec.Raw(c) for c in chunks])
                except TransportError as exc:
                    self.failed = exc  # raised by partial_stream once the exchange is over
                    self._room.set()
                    return
                self.events += 1
            if closing:
                return
            if not self._closed.is_set():  # closed while publishing: flush at once
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._closed.wait()  # the end of the exchange cuts it short

    def close(self) -> None:
        self._closed.set()
        self._wake.set()


@contextlib.asynccontextmanager
async def partial_stream(
    publish: Publish, *, max_bytes: int, interval: float, what: str
) -> AsyncIterator[PartialStream]:
    """A :class:`PartialStream` for the block (one runtime exchange); on leaving, what is pending
    is published before the block's caller goes on (to publish the step's result). A failed
    publish raises its :class:`TransportError` then."""
    stream = PartialStream(publish, max_bytes=max_bytes, interval=interval, what=what)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(stream.pump(), name="partial-events")
        try:
            yield stream
        finally:
            stream.close()
    if stream.failed is not None:
        raise stream.failed
