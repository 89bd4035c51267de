"""Job state in the database. Every change goes through :func:`asya_gateway.jobstate.apply`;
this module persists what the state machine returns and nothing else. On PostgreSQL a change is
one statement that writes the row only if it is still at the version read, else the events are
applied again to the job as it now is (:mod:`asya_gateway.pgstore`); on SQLite it is a
transaction that holds the database's writer lock."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import functools
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import exc as sa
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from asya_protocol import Envelope, StepEvent

from . import jobstate
from .db import Job, JobEvent, available, sessions, utcnow
from .errors import DatabaseUnavailable, check_text
from .jobstate import TERMINAL, Event, JobState, JobStatus, Terminal, Timeout, Transition
from .messages import JOB_HEADER
from .pgstore import KEY_CONSTRAINT, PgStore

__all__ = ["EVENTS_PAGE", "JOB_HEADER", "Applied", "DuplicateKey", "JobQuery", "JobStore"]

Notify = Callable[[AsyncSession, str], Awaitable[None]]
T = TypeVar("T")
_FINISHED = sorted(status.value for status in TERMINAL)
_COLUMNS = tuple(Job.__table__.columns.keys())
EVENTS_PAGE = 500  # history events read at once
MAX_ATTEMPTS = 50
"""Writes of one job that may find it changed by another writer first before one fails."""
RECENT_JOBS = 1024
"""Jobs whose row this store last wrote, kept (an unfinished one without its input, a finished
one without its input, result and error) so that a step event or a result costs one statement,
not two, and a late step event (after the result) one append (PostgreSQL)."""


class _Again(enum.Enum):
    AGAIN = enum.auto()


_AGAIN = _Again.AGAIN
"""A write that must start over from the row as it now is."""


class DuplicateKey(Exception):
    """The principal already started a job with this idempotency key."""


@dataclass(frozen=True)
class Applied:
    """A job after some events: ``changed`` if any of them changed its state, ``finished`` if
    they brought it to its final status."""

    job: Job
    changed: bool
    finished: bool = False


OnFinished = Callable[[Job], None]


@dataclass(frozen=True, kw_only=True)
class JobQuery:
    """Which jobs to list, newest first: ``before`` is the id the previous page ended with."""

    status: str | None = None
    tool: str | None = None
    limit: int = 50
    before: str | None = None
    owner: str | None = None
    """Only this principal's jobs; None for every job (an admin)."""

    def __post_init__(self) -> None:
        """Refuse (:class:`~asya_gateway.errors.InvalidQuery`) what no database can hold."""
        for field in ("status", "tool", "before"):
            value = getattr(self, field)
            if value is not None:
                check_text(field, value)


def state_of(job: Job) -> JobState:
    return JobState(
        status=JobStatus(job.status),
        root_id=job.root_id,
        branches=job.branches,
        progress=job.progress,
        message=job.message,
        result=job.result,
        error=job.error,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
    )


def _store_state(job: Job, state: JobState) -> None:
    job.status = state.status.value
    # jobstate never edits a branches value in place, so this is a new value the ORM sees
    # (no deep copy: a branch's result can nest as deep as the protocol allows).
    job.branches = state.branches
    job.progress = state.progress
    job.message = state.message
    job.result = state.result
    job.error = state.error
    if state.updated_at is not None:
        job.updated_at = state.updated_at
    job.finished_at = state.finished_at


class JobStore:
    def __init__(
        self, engine: AsyncEngine, notify: Notify, *, on_finished: OnFinished | None = None
    ) -> None:
        self.engine = engine
        self.on_finished = on_finished
        """Called with each job this store has just moved to its final status (after commit)."""
        self.sessions = sessions(engine)
        self._notify = notify
        self._sqlite = engine.dialect.name == "sqlite"
        self._sqlite_lock = asyncio.Lock()  # SQLite has no row locks: serialise writers here
        self._pg = (
            PgStore(engine.url.render_as_string(hide_password=False))
            if engine.dialect.name == "postgresql"
            else None
        )
        self._recent: OrderedDict[str, Job] = OrderedDict()
        """The row of each job this store wrote last, newest last: where the broker's writes
        start from instead of reading the row (see :meth:`_apply_pg`)."""

    async def close(self) -> None:
        """Close this store's own PostgreSQL pool (the engine is the caller's to dispose)."""
        if self._pg is not None:
            await self._pg.close()

    async def _locked_job(self, session: AsyncSession, job_id: str) -> Job | None:
        stmt = select(Job).where(Job.id == job_id)
        if not self._sqlite:
            stmt = stmt.with_for_update()
        return (await session.execute(stmt)).scalar_one_or_none()

    async def _record(self, session: AsyncSession, job_id: str, transition: Transition) -> None:
        if jobstate.Effect.NOTIFY not in transition.effects:
            return
        now = utcnow()
        for record in transition.records:
            session.add(
                JobEvent(job_id=job_id, type=record.kind.value, data=record.data, created_at=now)
            )
        await self._notify(session, job_id)

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        """A session whose availability errors are :class:`DatabaseUnavailable`."""
        async with available(), self.sessions() as session:
            yield session

    async def _write(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        if self._sqlite:
            async with self._sqlite_lock, self._session() as session, session.begin():
                return await fn(session)
        async with self._session() as session, session.begin():
            return await fn(session)

    async def ping(self, timeout: float) -> str:
        """``"ok"`` if the database answers ``SELECT 1`` within ``timeout`` seconds, else why."""
        try:
            async with asyncio.timeout(timeout), self._session() as session:
                await session.execute(text("SELECT 1"))
        except TimeoutError:
            return f"database unavailable: no answer within {timeout:g} s"
        except DatabaseUnavailable as exc:
            return str(exc)
        return "ok"

    # --- commands -----------------------------------------------------------------------------

    async def create(
        self,
        tool: str,
        arguments: Any,
        timeout: float,
        *,
        principal: str = "",
        idempotency_key: str | None = None,
    ) -> tuple[Job, str]:
        """A pending job and the id of its first envelope. With an ``idempotency_key`` that
        this principal already used, nothing is inserted: :class:`DuplicateKey` (see
        :meth:`by_key`)."""
        now = utcnow()
        job_id, root = str(uuid.uuid4()), str(uuid.uuid4())
        transition = jobstate.created(tool, root, now)
        job = Job(
            id=job_id,
            tool=tool,
            input=arguments,
            root_id=root,
            created_at=now,
            deadline=now + datetime.timedelta(seconds=timeout),
            principal=principal,
            idempotency_key=idempotency_key,
        )
        _store_state(job, transition.state)
        job.version = 0
        if self._pg is not None:
            try:
                async with available():
                    await self._pg.insert(job, transition.records)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == KEY_CONSTRAINT:
                    raise DuplicateKey(idempotency_key) from None
                raise
            return job, root

        async def go(session: AsyncSession) -> None:
            session.add(job)
            await session.flush()
            await self._record(session, job_id, transition)

        try:
            await self._write(go)
        except sa.IntegrityError as exc:
            raise DuplicateKey(idempotency_key) from exc
        return job, root

    async def apply(
        self,
        job_id: str,
        events: Sequence[Event],
        *,
        current: Job | None = None,
        recent: bool = False,
    ) -> Applied | None:
        """Apply events to a job, in order, at once; None if there is no such job.

        ``current`` is the job as the caller last saw it (a start's new job): on PostgreSQL
        it saves reading the job first, if no other writer changed it since. With ``recent``
        the row this store last wrote is used the same way, when it has it; the job returned
        then may lack its ``input``, ``result`` and ``error`` (the broker's writes, which only
        need to know that it exists).
        """
        check_text("job_id", job_id)
        if self._pg is not None:
            if current is None and recent:
                current = self._recent.get(job_id)
            async with available():
                applied = await self._apply_pg(self._pg, job_id, events, current)
        else:
            applied = await self._write(functools.partial(self._apply_locked, job_id, events))
        if applied is not None and applied.finished and self.on_finished is not None:
            self.on_finished(applied.job)
        return applied

    async def _apply_pg(
        self, pg: PgStore, job_id: str, events: Sequence[Event], current: Job | None
    ) -> Applied | None:
        """Write what ``events`` do to the job, starting from ``current`` if given. A write
        lands only at the version it started from; when another writer got there first, the
        job is read and the events applied again. ``current`` is only a hint: when the events
        change nothing of an unfinished job, they are applied once more to the row as it is, so
        a stale hint never decides that nothing is to be written. A finished job is final
        (:mod:`~asya_gateway.jobstate` changes nothing of it), so what its events leave, late
        step events' history, is appended without a version (:meth:`PgStore.append`)."""
        job = current
        for _ in range(MAX_ATTEMPTS):
            read = job is None
            if job is None:
                job = await pg.get(job_id)
                if job is None:
                    self._recent.pop(job_id, None)
                    return None
            done = await self._attempt(pg, job, events, read=read)
            if done is not _AGAIN:
                return done
            job = None  # the row moved on (another writer), or the hint said too little
        raise DatabaseUnavailable(
            f"job {job_id}: changed by other writers {MAX_ATTEMPTS} times in a row"
        )

    async def _attempt(
        self, pg: PgStore, job: Job, events: Sequence[Event], *, read: bool
    ) -> Applied | _Again | None:
        """One write of ``events`` from ``job`` (``read``: the row as just read, else a
        hint); :data:`_AGAIN` when the job must be read and the events applied again."""
        state, was_finished = state_of(job), job.job_status.terminal
        now, changed = utcnow(), False
        records: list[jobstate.Record] = []
        for event in events:
            transition = jobstate.apply(state, event, now)
            if jobstate.Effect.NOTIFY in transition.effects:
                records.extend(transition.records)
            state, changed = transition.state, changed or transition.changed
        if not records and not changed:
            if not read and not was_finished:
                return _AGAIN  # nothing to write from the hint: ask the row itself
            return Applied(job, False)
        if was_finished:  # only history: its row stays as it is
            if await pg.append(job.id, records, now):
                return Applied(job, False)
            self._recent.pop(job.id, None)
            return None if read else _AGAIN  # purged meanwhile
        written = Job(**{column: getattr(job, column) for column in _COLUMNS})
        _store_state(written, state)
        if await pg.update(written, job.version, records, now):
            written.version = job.version + 1  # by the trigger
            self._remember(written)
            finished = changed and not was_finished and state.status.terminal
            return Applied(written, changed, finished=finished)
        self._recent.pop(job.id, None)
        return _AGAIN

    def _remember(self, job: Job) -> None:
        """Keep ``job``'s row as written, without the values a write from it does not need:
        its input, and once it has finished (when nothing rewrites the row), its result,
        error and branches too."""
        self._recent.pop(job.id, None)
        kept = Job(**{column: getattr(job, column) for column in _COLUMNS})
        kept.input = None
        if job.job_status.terminal:
            kept.result = kept.error = kept.branches = None
        self._recent[job.id] = kept
        if len(self._recent) > RECENT_JOBS:
            self._recent.popitem(last=False)

    async def _apply_locked(
        self, job_id: str, events: Sequence[Event], session: AsyncSession
    ) -> Applied | None:
        job = await self._locked_job(session, job_id)
        if job is None:
            return None
        state, changed = state_of(job), False
        was_finished = state.status.terminal
        for event in events:
            transition = jobstate.apply(state, event, utcnow())
            await self._record(session, job_id, transition)
            state, changed = transition.state, changed or transition.changed
        if changed:
            _store_state(job, state)
            job.version += 1
        return Applied(
            job, changed, finished=changed and not was_finished and state.status.terminal
        )

    async def on_terminal(self, job_id: str, envelope: Envelope, ok: bool) -> bool:
        """A message of this job reached happy-end (``ok``) or error-end; False if there is no
        such job."""
        event = Terminal(envelope.id or "", ok, envelope.payload_value())
        return await self.apply(job_id, [event], recent=True) is not None

    async def on_steps(self, job_id: str, events: Sequence[StepEvent]) -> bool:
        """Apply a job's step events, in order, in one transaction; False if there is no such
        job (known only when one of the events matters)."""
        wanted = [e for e in events if jobstate.relevant(e)]
        if not wanted:
            return True
        return await self.apply(job_id, wanted, recent=True) is not None

    async def sweep_timeouts(self) -> list[str]:
        """Time out every unfinished job past its deadline (atomic: safe with many replicas)."""
        now = utcnow()
        async with self._session() as session:
            ids = list(
                (
                    await session.execute(
                        select(Job.id).where(Job.status.not_in(_FINISHED), Job.deadline < now)
                    )
                ).scalars()
            )
        timed_out = []
        for job_id in ids:
            applied = await self.apply(job_id, [Timeout()])
            if applied is not None and applied.changed:
                timed_out.append(job_id)
        return timed_out

    # --- queries ------------------------------------------------------------------------------

    async def count_unfinished(self) -> int:
        async with self._session() as session:
            counted = await session.execute(
                select(func.count()).select_from(Job).where(Job.status.not_in(_FINISHED))
            )
            return int(counted.scalar_one())

    async def get(self, job_id: str) -> Job | None:
        check_text("job_id", job_id)
        if self._pg is not None:
            async with available():
                return await self._pg.get(job_id)
        async with self._session() as session:
            job: Job | None = await session.get(Job, job_id)
            return job

    async def by_key(self, principal: str, key: str) -> Job | None:
        """The job this principal started with this idempotency key, if any."""
        async with self._session() as session:
            stmt = select(Job).where(Job.principal == principal, Job.idempotency_key == key)
            job: Job | None = (await session.execute(stmt)).scalar_one_or_none()
            return job

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(query.limit)
        if query.owner is not None:
            stmt = stmt.where(Job.principal == query.owner)
        if query.status:
            stmt = stmt.where(Job.status == query.status)
        if query.tool:
            stmt = stmt.where(Job.tool == query.tool)
        async with self._session() as session:
            if query.before:
                anchor = await session.get(Job, query.before)
                if anchor is not None:
                    stmt = stmt.where(
                        (Job.created_at < anchor.created_at)
                        | ((Job.created_at == anchor.created_at) & (Job.id < anchor.id))
                    )
            return list((await session.execute(stmt)).scalars())

    async def page(self, job_id: str, after: int) -> tuple[list[JobEvent], bool]:
        """A page of the events after ``after``, and whether they end the job's history (the
        job has finished, or there is no such job, and the page is not full)."""
        check_text("job_id", job_id)
        if self._pg is not None:
            async with available():
                status, events = await self._pg.page(job_id, after, EVENTS_PAGE)
        else:
            # The job is read first: if it had finished then, its history was complete (a final
            # status is written with its record), so the page read after it holds the end.
            job = await self.get(job_id)
            status = None if job is None else job.status
            events = await self.events_since(job_id, after)
        ended = status is None or JobStatus(status).terminal
        return events, ended and len(events) < EVENTS_PAGE

    async def events_since(self, job_id: str, after: int) -> list[JobEvent]:
        check_text("job_id", job_id)
        if self._pg is not None:
            async with available():
                return await self._pg.events_since(job_id, after, EVENTS_PAGE)
        async with self._session() as session:
            stmt = (
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.id > after)
                .order_by(JobEvent.id)
                .limit(EVENTS_PAGE)
            )
            return list((await session.execute(stmt)).scalars())
