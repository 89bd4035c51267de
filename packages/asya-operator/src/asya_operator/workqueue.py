"""A keyed, de-duplicating work queue with a fixed number of workers (client-go's workqueue).

A key waiting in the queue is queued once however many times it is added; a key added while a
worker handles it is handled once more afterwards (never by two workers at once). The handler
returns seconds after which the key should run again, or None.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from .metrics import OperatorMetrics

__all__ = ["ERROR_DELAY", "Key", "WorkQueue"]

log = logging.getLogger("asya_operator")

Key: TypeAlias = tuple[str, str]
"""(namespace, name)."""
Handler: TypeAlias = Callable[[str, str], Awaitable[float | None]]
OnError: TypeAlias = Callable[[Key, Exception], float]
"""Called with a key whose handler raised: logs it, and says in how many seconds to retry."""

ERROR_DELAY = 10.0
"""Seconds before a key whose handler raised runs again."""


def _retry_later(key: Key, exc: Exception) -> float:
    log.error("reconcile %s/%s failed; retrying", *key, exc_info=exc)
    return ERROR_DELAY


class WorkQueue:
    def __init__(
        self,
        handler: Handler,
        *,
        workers: int = 4,
        metrics: OperatorMetrics | None = None,
        on_error: OnError | None = None,
    ) -> None:
        self.handler = handler
        self.workers = workers
        self.on_error = on_error or _retry_later
        self.metrics = metrics or OperatorMetrics()
        self.idle = asyncio.Event()
        """Set while nothing is queued or running (a requeue timer may still be pending)."""
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._busy: set[Key] = set()
        self._again: set[Key] = set()
        self._tg: asyncio.TaskGroup | None = None
        self.metrics.track_depth(self._queue.qsize)

    def add(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key in self._busy:
            self._again.add(key)  # run once more after the running one
        elif key not in self._pending:
            self._pending.add(key)
            self.idle.clear()
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds (dropped if the queue stops first)."""
        if self._tg is None:
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            self.add(*key)

        self._tg.create_task(later(), name=f"requeue-{key[0]}/{key[1]}")

    async def run(self) -> None:
        """Run the workers until cancelled; cancelling also drops every pending requeue."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                for i in range(self.workers):
                    tg.create_task(self._worker(), name=f"worker-{i}")
                await asyncio.Future()  # until cancelled
            finally:
                self._tg = None

    async def _handle(self, key: Key) -> float | None:
        started = time.perf_counter()
        try:
            delay = await self.handler(*key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted, then handed to on_error (logged)
            self.metrics.observe(time.perf_counter() - started, exc)
            return self.on_error(key, exc)
        self.metrics.observe(time.perf_counter() - started, None)
        return delay

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            self._busy.add(key)
            try:
                delay = await self._handle(key)
            finally:
                self._busy.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.add(*key)
            elif delay is not None:
                self.add_after(key, delay)
            if not self._pending and not self._busy and self._queue.empty():
                self.idle.set()
