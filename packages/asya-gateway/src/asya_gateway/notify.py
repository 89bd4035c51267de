"""Tell SSE streams that a job has new events, in this process and in every other replica.

PostgreSQL: ``pg_notify`` inside the writing transaction (delivered on commit) and a listening
connection per replica. SQLite: in-process only (SQLite is the single-process embedded default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["CHANNEL", "Notifier"]

log = logging.getLogger("asya_gateway.notify")
CHANNEL = "asya_job_events"


class Notifier:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.postgres = database_url.startswith("postgresql")
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listener: Any = None

    async def start(self) -> None:
        if not self.postgres:
            return
        import asyncpg  # noqa: PLC0415 - PostgreSQL only

        dsn = "postgresql://" + self.database_url.split("://", 1)[1]
        self._listener = await asyncpg.connect(dsn)
        await self._listener.add_listener(CHANNEL, self._on_notification)

    async def stop(self) -> None:
        if self._listener is not None:
            import asyncpg  # noqa: PLC0415 - PostgreSQL only

            # Closing at shutdown: a connection already broken has nothing left to deliver.
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._listener.close()
            self._listener = None

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.wake(payload)

    def wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    async def notify(self, session: AsyncSession, job_id: str) -> None:
        """Called inside the writing transaction."""
        if self.postgres:
            await session.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": job_id})
        else:
            asyncio.get_running_loop().call_soon(self.wake, job_id)  # after the commit returns

    def subscribe(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]
