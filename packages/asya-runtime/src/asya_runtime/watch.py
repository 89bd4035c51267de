"""Run an async handler so that it ends with its request: cancelled when the sidecar abandons
the request (closes the connection: it timed out) or when the runtime timeout passes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, SupportsIndex

__all__ = [
    "CANCEL_WAIT",
    "Abandoned",
    "HandlerTimeout",
    "WatchedReader",
    "first_of",
    "run_watched",
]

log = logging.getLogger("asya_runtime")

CANCEL_WAIT = 1.0
"""Seconds a cancelled async handler has to end before it counts as stuck."""


class Abandoned(Exception):
    """The sidecar closed the connection while the handler ran: nobody waits for a reply."""


class HandlerTimeout(Exception):
    """The handler ran past the runtime timeout and was cancelled."""


class WatchedReader(asyncio.StreamReader):
    """A connection's reader that tells, while a request runs, that the stream ended (or broke)
    or that bytes arrived: no read, no task per request."""

    _on_end: Callable[[], None] | None = None
    _on_data: Callable[[], None] | None = None

    def watch(self, on_end: Callable[[], None], on_data: Callable[[], None]) -> None:
        """Until :meth:`unwatch`: call ``on_end`` at the end of the stream (at once if it has
        ended), ``on_data`` when bytes arrive (at once if some wait unread)."""
        if self.at_eof() or self.exception() is not None:
            on_end()
            return
        self._on_end, self._on_data = on_end, on_data
        # Bytes already read from the socket but not taken: sent after the request.
        if self._buffer:  # type: ignore[attr-defined]  # StreamReader's own buffer
            self._on_data = None
            on_data()

    def unwatch(self) -> None:
        self._on_end = self._on_data = None

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        super().feed_data(data)
        on_data = self._on_data
        if data and on_data is not None:
            self._on_data = None  # once is enough
            on_data()

    def feed_eof(self) -> None:
        super().feed_eof()
        if self._on_end is not None:
            self._on_end()

    def set_exception(self, exc: Exception) -> None:
        super().set_exception(exc)
        if self._on_end is not None:
            self._on_end()


async def run_watched(
    work: Awaitable[Any],
    reader: WatchedReader,
    *,
    timeout: float,
    on_stuck: Callable[[], None],
    on_extra: Callable[[], None],
) -> Any:
    """``work``'s result; :class:`Abandoned` or :class:`HandlerTimeout` after cancelling it.

    While it runs the connection is watched: an end of stream (or a reset) means the sidecar
    abandoned the request. A cancelled handler that does not end within :data:`CANCEL_WAIT`
    calls ``on_stuck`` and is waited for still (it keeps its slot). Bytes arriving during the
    request break the protocol (requests are not pipelined): ``on_extra`` is called, so that the
    connection is closed after the reply, and the handler runs on.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    ended: asyncio.Future[Exception | None] = loop.create_future()

    def end(why: Exception | None) -> None:
        if not ended.done():
            ended.set_result(why)

    task.add_done_callback(lambda _: end(None))
    timer = loop.call_later(timeout, end, HandlerTimeout())
    reader.watch(lambda: end(Abandoned()), on_extra)
    try:
        reason = await ended
    finally:
        reader.unwatch()
        timer.cancel()
        if not task.done() and not ended.done():
            task.cancel()  # our own cancellation (shutdown): the handler goes with it
    if reason is None:
        return task.result()
    await _cancel(task, on_stuck)
    raise reason


async def _cancel(task: asyncio.Future[Any], on_stuck: Callable[[], None]) -> None:
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_WAIT)
    if not done:
        on_stuck()
        await asyncio.wait({task})
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()  # retrieved: what it raised while ending is not the reply any more


async def first_of(*events: asyncio.Event) -> asyncio.Event:
    """Wait until one of ``events`` is set; return it."""
    waiters = {asyncio.ensure_future(e.wait()): e for e in events}
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return waiters[next(iter(done))]
