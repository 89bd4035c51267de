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
    admin = await asyncpg.connect(urlunsplit(parts._replace(scheme="postgresql")))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(parts._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
