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

    async def admin(statement: str) -> None:
        # A short connection each time: a test may restart the server in between.
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
