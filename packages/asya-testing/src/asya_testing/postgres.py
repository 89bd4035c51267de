"""A fresh PostgreSQL database per test, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

__all__ = ["fresh_database"]


@asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """Create ``asya_t_<random>`` through ``admin_url`` and yield its URL; drop it at the end."""
    import asyncpg  # noqa: PLC0415 - optional dependency of asya-testing

    name = f"asya_t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(admin_url)
    admin_dsn = urlunsplit(parts._replace(scheme="postgresql"))

    async def admin(statement: str, *args: object) -> None:
        # A short connection each time: a test may restart the server in between.
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(statement, *args)
        finally:
            await connection.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        # Not DROP ... WITH (FORCE): it refuses when an autovacuum worker happens to be in the
        # database ("must be a member of the role whose process is being terminated"). End this
        # role's sessions, then a plain DROP, which waits out autovacuum (up to 5 s per try).
        await admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()",
            name,
        )
        for attempt in range(3):
            try:
                await admin(f'DROP DATABASE IF EXISTS "{name}"')
                break
            except asyncpg.ObjectInUseError:
                if attempt == 2:
                    raise
