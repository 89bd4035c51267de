"""Run an async handler so that it ends with its request: cancelled when the sidecar abandons
the request (closes the connection: it timed out) or when the runtime timeout passes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "CANCEL_WAIT",
    "Abandoned",
    "HandlerTimeout",
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


async def run_watched(
    work: Awaitable[Any],
    reader: asyncio.StreamReader,
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
    connection is closed after the reply, and the handler runs on unwatched.
    """
    task = asyncio.ensure_future(work)
    watch: asyncio.Task[bytes] = asyncio.create_task(reader.read(1), name="asya-eof-watch")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        done, _ = await asyncio.wait(
            {task, watch}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if watch in done and task not in done and _data(watch):
            on_extra()
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        if task in done:
            return task.result()
        reason: Exception = Abandoned() if watch.done() else HandlerTimeout()
        await _cancel(task, on_stuck)
        raise reason
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()  # our own cancellation (shutdown): the handler goes with it
        # Until the watch has really ended, the reader is still "waited on": the next frame
        # could not be read.
        await asyncio.gather(watch, return_exceptions=True)


def _data(watch: asyncio.Task[bytes]) -> bool:
    """True when the watch read a byte (not an end of stream or a broken connection)."""
    return watch.exception() is None and watch.result() != b""


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
