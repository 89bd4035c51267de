"""Tell SSE streams that a job has new events, in this process and in every other replica.

PostgreSQL: ``pg_notify`` inside the writing transaction (delivered on commit) and a listening
connection per replica. SQLite: in-process only (SQLite is the single-process embedded default).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from .supervise import NO_HEALTH, Health

__all__ = ["CHANNEL", "Notifier"]

CHANNEL = "asya_job_events"
CONNECT_TIMEOUT = 5.0
KEEPALIVE = 10.0  # seconds between checks that the LISTEN connection still answers


class Notifier:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.postgres = database_url.startswith("postgresql")
        self._waiters: dict[str, set[asyncio.Event]] = {}

    async def listen(self, health: Health = NO_HEALTH) -> None:
        """Hold the LISTEN connection (PostgreSQL) until it is lost, then raise: supervised,
        so it reconnects after the backoff. Followers are woken on every (re)connection, since
        notifications sent while it was away are gone (they re-read the history)."""
        import asyncpg  # noqa: PLC0415 - PostgreSQL only

        dsn = "postgresql://" + self.database_url.split("://", 1)[1]
        connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _conn: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notification)
            health.ok()
            self.wake_all()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KEEPALIVE):
                        await lost.wait()
                if not lost.is_set():  # a silent network: ask, within a bound
                    await connection.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT)
            raise ConnectionError("the LISTEN connection to PostgreSQL was closed")
        finally:
            # A connection already broken has nothing left to deliver.
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.wait_for(connection.close(), CONNECT_TIMEOUT)

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.wake(payload)

    def wake_all(self) -> None:
        for job_id in list(self._waiters):
            self.wake(job_id)

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
