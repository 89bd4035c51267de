"""A job's writes on SQLite and PostgreSQL: on PostgreSQL each write is one statement that only
lands at the row version it read; a writer that lost the race reads the job again and applies
its events to the job as it now is. Nothing is lost or applied twice either way."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import update

from asya_gateway.db import Job
from asya_gateway.jobs import DuplicateKey, JobStore
from asya_gateway.jobstate import Cancel, Published
from asya_gateway.notify import Notifier
from asya_gateway.service import Gateway
from asya_protocol import EventType, StepEvent


def progress(n: int) -> StepEvent:
    return StepEvent(
        type=EventType.PROGRESS,
        actor="a",
        time=float(n),
        progress=n / 100,
        message=f"step {n}",
    )


async def history(store: JobStore, job_id: str) -> list[tuple[str, dict[str, object]]]:
    return [(e.type, e.data) for e in await store.events_since(job_id, 0)]


async def test_a_write_from_a_stale_job_applies_to_the_job_as_it_is(store: JobStore) -> None:
    job, _ = await store.create("echo", {"n": 1}, 60)
    running = await store.apply(job.id, [Published()], current=job)
    assert running is not None
    assert running.job.status == "running"
    # ``job`` is the version before "running": the cancel is applied to the running job.
    cancelled = await store.apply(job.id, [Cancel()], current=job)
    assert cancelled is not None
    assert cancelled.changed
    assert cancelled.finished
    assert cancelled.job.status == "cancelled"
    assert cancelled.job.version == running.job.version + 1
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.version) == ("cancelled", cancelled.job.version)
    statuses = [data["status"] for kind, data in await history(store, job.id) if kind == "status"]
    assert statuses == ["pending", "running", "cancelled"]
    # The stale "pending" job once more: Published is now ignored, nothing is written.
    again = await store.apply(job.id, [Published()], current=job)
    assert again is not None
    assert not again.changed
    assert again.job.status == "cancelled"
    assert (await store.get(job.id)).version == cancelled.job.version  # type: ignore[union-attr]


async def test_a_write_by_another_kind_of_writer_is_not_overwritten(store: JobStore) -> None:
    """An update that knows nothing of versions (a replica of an older gateway during a rolling
    upgrade writes through the ORM) still moves the version on: a write from the job as it was
    before it is applied again to the job as it is, and keeps its change."""
    job, _ = await store.create("echo", {"n": 1}, 60)
    running = await store.apply(job.id, [Published()], current=job)
    assert running is not None
    async with store.engine.begin() as conn:
        await conn.execute(update(Job).where(Job.id == job.id).values(message="older gateway"))
        if store.engine.dialect.name == "sqlite":  # one process: only this job store writes
            await conn.execute(update(Job).where(Job.id == job.id).values(version=Job.version + 1))
    cancelled = await store.apply(job.id, [Cancel()], current=running.job)
    assert cancelled is not None
    assert cancelled.job.status == "cancelled"
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.message) == ("cancelled", "older gateway")
    assert stored.version == running.job.version + 2


async def test_concurrent_writers_of_one_job_lose_nothing(store: JobStore) -> None:
    job, _ = await store.create("echo", {"n": 1}, 60)
    await store.apply(job.id, [Published()], current=job)
    writers = 12
    results = await asyncio.gather(*(store.apply(job.id, [progress(n)]) for n in range(writers)))
    assert all(r is not None and r.changed for r in results)
    records = [data for kind, data in await history(store, job.id) if kind == "progress"]
    assert sorted(r["message"] for r in records) == sorted(f"step {n}" for n in range(writers))  # type: ignore[type-var]
    stored = await store.get(job.id)
    assert stored is not None
    # One version per write: the insert is 0, running 1, then one per progress event.
    assert stored.version == 1 + writers
    # The job keeps the last write's progress, whichever writer that was.
    last = max(results, key=lambda r: r.job.version)  # type: ignore[union-attr]
    assert stored.progress == last.job.progress  # type: ignore[union-attr]


async def test_an_idempotency_key_used_twice_is_a_duplicate_key(store: JobStore) -> None:
    job, _ = await store.create("echo", {"n": 1}, 60, principal="p", idempotency_key="k")
    with pytest.raises(DuplicateKey):
        await store.create("echo", {"n": 2}, 60, principal="p", idempotency_key="k")
    other, _ = await store.create("echo", {"n": 1}, 60, principal="q", idempotency_key="k")
    assert other.id != job.id
    found = await store.by_key("p", "k")
    assert found is not None
    assert (found.id, found.input) == (job.id, {"n": 1})


async def test_a_value_the_database_refuses_is_an_error_of_the_statement(store: JobStore) -> None:
    """A progress message with a NUL character, which PostgreSQL's text refuses: the write
    fails as a bad statement (the consumer dead-letters its message after one redelivery),
    never as the database being unavailable (which would hold the message for ever)."""
    job, _ = await store.create("echo", {"n": 1}, 60)
    event = StepEvent(type=EventType.PROGRESS, actor="a", time=1.0, progress=0.5, message="a\x00b")
    if store.engine.dialect.name == "postgresql":
        with pytest.raises(asyncpg.DataError):
            await store.apply(job.id, [event])
        assert (await store.get(job.id)).version == 0  # type: ignore[union-attr]
    else:  # SQLite keeps it
        applied = await store.apply(job.id, [event])
        assert applied is not None
        assert applied.job.message == "a\x00b"


async def test_a_finished_jobs_whole_history_is_followed(store: JobStore, database: str) -> None:
    """A follower that comes after the end reads the whole history, page after page (500
    events each), however long it is, and the stream ends with the final status."""
    job, _ = await store.create("echo", {"n": 1}, 60)
    await store.apply(job.id, [Published()], current=job)
    await store.apply(job.id, [progress(n % 100) for n in range(1200)])
    await store.apply(job.id, [Cancel()])
    gateway = Gateway(
        tools={},
        store=store,
        broker=None,  # type: ignore[arg-type] # following a job publishes nothing
        notifier=Notifier(database),
        default_timeout=60,
    )
    async with asyncio.timeout(10):
        seen = [event async for event in gateway.events(job.id)]
    assert len(seen) == 1 + 1 + 1200 + 1
    assert [e.id for e in seen] == sorted(e.id for e in seen)
    assert (seen[-1].type, seen[-1].data["status"]) == ("status", "cancelled")
