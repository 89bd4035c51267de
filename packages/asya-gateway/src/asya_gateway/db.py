"""Persistence: jobs and their append-only event history (SQLAlchemy 2, async).

The schema is created by Alembic migrations (``asya-gateway migrate``), which run on PostgreSQL
and SQLite alike.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy import exc as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .errors import DatabaseUnavailable
from .jobstate import JobStatus

__all__ = ["Base", "Job", "JobEvent", "available", "make_engine", "sessions", "utcnow"]

CONNECT_TIMEOUT = 5.0  # seconds for a new connection (asyncpg's default is 60)
STATEMENT_TIMEOUT = 30.0  # seconds for one statement, on the client side
POOL_TIMEOUT = 10.0  # seconds to wait for a pooled connection
# Errors of the statement itself, not of the database being there: not "unavailable".
_STATEMENT_ERRORS = (
    sa.IntegrityError,
    sa.ProgrammingError,
    sa.DataError,
    sa.NotSupportedError,
    # The same, raised by asyncpg itself (the job store's PostgreSQL statements, .pgstore).
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.SyntaxOrAccessError,
    asyncpg.DataError,
    asyncpg.FeatureNotSupportedError,
)
_UNAVAILABLE = (
    sa.DBAPIError,
    sa.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "asya_jobs"
    __table_args__ = (
        Index("ix_asya_jobs_principal_created", "principal", "created_at"),
        Index(
            "ux_asya_jobs_principal_idempotency_key", "principal", "idempotency_key", unique=True
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tool: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    input: Mapped[Any] = mapped_column(JSON)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[Any] = mapped_column(JSON, nullable=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    root_id: Mapped[str] = mapped_column(String(64))
    branches: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    principal: Mapped[str] = mapped_column(String(64), server_default="", default="")
    """Who started it (:mod:`asya_gateway.principals`); '' for jobs from before principals."""
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    """Bumped by each update of the row (on PostgreSQL by a trigger, whoever updates it; on
    SQLite by the job store); PostgreSQL's writes compare it (:mod:`.pgstore`)."""

    @property
    def job_status(self) -> JobStatus:
        return JobStatus(self.status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tool": self.tool,
            "status": self.status,
            "input": self.input,
            "result": self.result,
            "error": self.error,
            "progress": self.progress,
            "message": self.message,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "deadline": self.deadline.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class JobEvent(Base):
    __tablename__ = "asya_job_events"
    __table_args__ = (Index("ix_asya_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("asya_jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=POOL_TIMEOUT,
        connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": STATEMENT_TIMEOUT},
    )


def unavailable_reason(exc: BaseException) -> str:
    """The cause of a database error in one line, without the SQL statement."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    text = lines[0] if lines else ""
    # The asyncpg adapter prefixes "<class 'asyncpg.exceptions.X'>: "; keep the message.
    text = text.split(">: ", 1)[-1]
    name = type(cause).__name__
    return f"{name}: {text}"[:300] if text else name


@contextlib.asynccontextmanager
async def available() -> AsyncIterator[None]:
    """Turn an error of the database's availability into :class:`DatabaseUnavailable`."""
    try:
        yield
    except _STATEMENT_ERRORS:
        raise
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(unavailable_reason(exc)) from exc


def sessions(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)
