"""Replicas starting together on one fresh PostgreSQL database: one migrates, the rest wait.

Each start is its own ``asya-gateway migrate`` process, as each replica is (Alembic keeps its
context in a module global, so two migrations in one process are not what production runs).
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg

STARTS = 2
DEADLINE = 60.0


def _plain(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(scheme="postgresql"))


async def _waiting_on_locks(admin: asyncpg.Connection, database: str) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        database,
    )
    return count


async def _migrate(url: str) -> tuple[int, str, str]:
    env = {**os.environ, "ASYA_GATEWAY_TOKENS": "t", "ASYA_DATABASE_URL": url}
    env["ASYA_LOG_LEVEL"] = "INFO"  # Alembic logs "Running upgrade" at INFO
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asya_gateway",
        "migrate",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_concurrent_first_starts_migrate_once(postgres_database: str) -> None:
    url = _plain(postgres_database)
    database = urlsplit(url).path.lstrip("/")
    # The race made certain: a third session holds the name of the first table the migration
    # creates in an open transaction, so every start is inside its migration (or waiting for
    # the lock) at the same moment. Without the lock, the second start's CREATE TABLE
    # alembic_version waits on the first one's and fails with a duplicate once it commits.
    blocker = await asyncpg.connect(url)
    # Its own session: pg_stat_activity is read once per transaction, and the blocker's stays open.
    watcher = await asyncpg.connect(url)
    try:
        hold = blocker.transaction()
        await hold.start()
        await blocker.execute("CREATE TABLE asya_jobs (id integer)")
        async with asyncio.TaskGroup() as tg:
            starts = [tg.create_task(_migrate(url)) for _ in range(STARTS)]
            async with asyncio.timeout(DEADLINE):
                while await _waiting_on_locks(watcher, database) < STARTS:
                    assert not any(s.done() for s in starts), [s.result() for s in starts]
                    await asyncio.sleep(0.05)
            await hold.rollback()
        for start in starts:
            returncode, out, err = start.result()
            assert (returncode, out) == (0, "migrations applied\n"), err

        assert await blocker.fetchval("SELECT array_agg(version_num) FROM alembic_version") == [
            "0003"
        ]
        columns = await blocker.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'asya_jobs'"
        )
        assert {
            "id",
            "tool",
            "status",
            "input",
            "root_id",
            "principal",
            "idempotency_key",
            "version",
        } <= {c["column_name"] for c in columns}
        ran = sum(start.result()[2].count("Running upgrade 0001 -> 0002") for start in starts)
        assert ran == 1, [start.result()[2] for start in starts]
    finally:
        await watcher.close()
        await blocker.close()
