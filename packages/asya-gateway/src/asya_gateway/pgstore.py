"""The job store's hot path on PostgreSQL, straight on asyncpg: one statement per write.

A start costs two statements (the insert, then "running" once the broker confirmed), a batch
of a job's step events one (two when the job store has to read the row first), and each is its
own transaction: no ``BEGIN``, no row lock held across round trips, no ORM unit of work. Each
write names the version of the job's row it read (``WHERE version = $n``; the trigger of
migration 0003 bumps the version on every update of the row, whoever makes it), and appends the
job's history records and notifies its followers (``pg_notify``, delivered on commit) in the
same statement. When another writer got there first, the write matches no row, and the job
store reads the job again and applies its events to it as it now is
(:meth:`asya_gateway.jobs.JobStore.apply`). What the events do is still decided by
:mod:`asya_gateway.jobstate` alone.

The other statements (listing, idempotency keys, counts, retention, readiness) go through
SQLAlchemy; SQLite, the embedded default, goes through SQLAlchemy throughout.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from .db import CONNECT_TIMEOUT, POOL_TIMEOUT, STATEMENT_TIMEOUT, Job, JobEvent
from .jobstate import TERMINAL, Record
from .notify import CHANNEL

__all__ = ["KEY_CONSTRAINT", "PgStore"]

KEY_CONSTRAINT = "ux_asya_jobs_principal_idempotency_key"
POOL_SIZE = 10


def _with_history(job: str, *, at: int, records: int) -> str:
    """A write: the CTE ``job`` (the row's statement, naming its id), then the history records
    in order (types ``$records``, data ``$records+1``, created at ``$at``; their ids follow the
    order the rows are inserted in), then the followers' notification (channel ``$records+2``,
    delivered on commit). Nothing is recorded or notified when ``job`` names no row."""
    return f"""
WITH job AS ({job}
), history AS (
    INSERT INTO asya_job_events (job_id, type, data, created_at)
    SELECT job.id, r.type, r.data::json, ${at} FROM job,
        unnest(${records}::text[], ${records + 1}::text[]) WITH ORDINALITY AS r(type, data, n)
    ORDER BY r.n
)
SELECT pg_notify(${records + 2}, id) FROM job
"""  # noqa: S608 - built at import from this module's constant statements, never from input


_INSERT = _with_history(
    """
    INSERT INTO asya_jobs (
        id, tool, status, input, result, error, progress, message, root_id, branches, created_at,
        updated_at, deadline, finished_at, principal, idempotency_key, version
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0)
    RETURNING id""",
    at=11,
    records=17,
)
_UPDATE = _with_history(
    """
    UPDATE asya_jobs SET status = $3, branches = $4, progress = $5, message = $6, result = $7,
        error = $8, updated_at = $9, finished_at = $10
    WHERE id = $1 AND version = $2  -- the trigger of migration 0003 bumps the version
    RETURNING id""",
    at=11,
    records=12,
)
# History for a finished job (late step events): nothing of its row changes any more, so no
# version to match and no row to rewrite. KEY SHARE holds off a purge until the commit.
_APPEND = _with_history(
    """
    SELECT id FROM asya_jobs WHERE id = $1 AND status = ANY($2::text[]) FOR KEY SHARE""",
    at=3,
    records=4,
)
_FINISHED = sorted(status.value for status in TERMINAL)
_GET = """
SELECT
    id, tool, status, input, result, error, progress, message, root_id, branches, created_at,
        updated_at, deadline, finished_at, principal, idempotency_key, version
FROM asya_jobs WHERE id = $1
"""
_EVENTS = """
SELECT id, job_id, type, data, created_at FROM asya_job_events
WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3
"""
# The job's status and a page of its history in one statement, so from one snapshot: no row
# if there is no such job, one row with no event if the page is empty.
_PAGE = """
SELECT job.status, event.id, event.type, event.data, event.created_at
FROM asya_jobs AS job
LEFT JOIN LATERAL (
    SELECT id, type, data, created_at FROM asya_job_events
    WHERE job_id = job.id AND id > $2 ORDER BY id LIMIT $3
) AS event ON true
WHERE job.id = $1
ORDER BY event.id
"""


def dsn_of(database_url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy URL (``postgresql+asyncpg://`` -> ``postgresql://``)."""
    return "postgresql://" + database_url.split("://", 1)[1]


async def _init(connection: asyncpg.Connection) -> None:
    # JSON columns hold what SQLAlchemy's JSON type writes and reads (the standard json module).
    await connection.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def _reset(connection: asyncpg.Connection) -> None:
    # Nothing here sets session state (no SET, LISTEN or advisory lock, no open transaction
    # between statements), so a connection goes back to the pool as it is: asyncpg's default
    # reset would cost a round trip per statement.
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


def _records(records: Sequence[Record]) -> tuple[list[str], list[str]]:
    return [r.kind.value for r in records], [json.dumps(r.data) for r in records]


class PgStore:
    """Jobs on PostgreSQL over a pool of its own (opened at first use, closed by :meth:`close`).

    Errors are asyncpg's: the job store turns those of the database's availability into
    ``DatabaseUnavailable`` (:func:`asya_gateway.db.available`)."""

    def __init__(self, database_url: str) -> None:
        self._dsn = dsn_of(database_url)
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _connected(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=POOL_SIZE,
                        timeout=CONNECT_TIMEOUT,
                        command_timeout=STATEMENT_TIMEOUT,
                        init=_init,
                        reset=_reset,
                    )
        return self._pool

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self._connected()
        async with pool.acquire(timeout=POOL_TIMEOUT) as connection:
            rows: list[asyncpg.Record] = await connection.fetch(query, *args)
            return rows

    async def insert(self, job: Job, records: Sequence[Record]) -> None:
        """Insert a new job (version 0) with its first history records."""
        types, data = _records(records)
        await self._fetch(
            _INSERT,
            job.id,
            job.tool,
            job.status,
            job.input,
            job.result,
            job.error,
            job.progress,
            job.message,
            job.root_id,
            job.branches,
            job.created_at,
            job.updated_at,
            job.deadline,
            job.finished_at,
            job.principal,
            job.idempotency_key,
            types,
            data,
            CHANNEL,
        )

    async def update(
        self, job: Job, version: int, records: Sequence[Record], now: datetime.datetime
    ) -> bool:
        """Write ``job``'s state and append ``records`` if the row is still at ``version``
        (the trigger then bumps it); False if another writer changed it first."""
        types, data = _records(records)
        written = await self._fetch(
            _UPDATE,
            job.id,
            version,
            job.status,
            job.branches,
            job.progress,
            job.message,
            job.result,
            job.error,
            job.updated_at,
            job.finished_at,
            now,
            types,
            data,
            CHANNEL,
        )
        return bool(written)

    async def append(self, job_id: str, records: Sequence[Record], now: datetime.datetime) -> bool:
        """Append ``records`` to the history of a finished job; False if there is no such job,
        or it has not finished."""
        types, data = _records(records)
        return bool(await self._fetch(_APPEND, job_id, _FINISHED, now, types, data, CHANNEL))

    async def get(self, job_id: str) -> Job | None:
        rows = await self._fetch(_GET, job_id)
        return Job(**dict(rows[0])) if rows else None

    async def events_since(self, job_id: str, after: int, limit: int) -> list[JobEvent]:
        rows = await self._fetch(_EVENTS, job_id, after, limit)
        return [JobEvent(**dict(row)) for row in rows]

    async def page(self, job_id: str, after: int, limit: int) -> tuple[str | None, list[JobEvent]]:
        """The job's status (None: no such job) and up to ``limit`` of its history events
        after ``after``, as they were at one moment."""
        rows = await self._fetch(_PAGE, job_id, after, limit)
        if not rows:
            return None, []
        events = [
            JobEvent(id=id_, job_id=job_id, type=type_, data=data, created_at=created_at)
            for _, id_, type_, data, created_at in rows
            if id_ is not None
        ]
        return rows[0][0], events

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
