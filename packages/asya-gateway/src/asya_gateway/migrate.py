"""Apply the gateway's Alembic migrations: ``asya-gateway migrate`` (or at start).

Replicas starting together (the chart runs two) must not migrate at once: on PostgreSQL the
migration transaction first takes the transaction-level advisory lock :data:`MIGRATION_LOCK_KEY`
(``pg_advisory_xact_lock``, in ``migrations/env.py``), so one replica migrates while the others
wait, then find the schema at head and do nothing. The lock ends with the transaction (commit,
rollback or a lost connection). SQLite takes no lock: a SQLite file serves one gateway process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

__all__ = ["MIGRATION_LOCK_KEY", "alembic_config", "upgrade"]

HERE = Path(__file__).resolve().parent

MIGRATION_LOCK_KEY = 0x415359414D494752
"""The PostgreSQL advisory lock key held while migrating ("ASYAMIGR" in ASCII, as a bigint).
Fixed: every version of the gateway must use the same one."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(url: str, revision: str) -> None:
    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` (Alembic runs its own event loop: use a thread)."""
    await asyncio.to_thread(_upgrade, url, revision)
