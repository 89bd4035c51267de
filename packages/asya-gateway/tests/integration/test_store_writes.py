"""A job's writes on SQLite and PostgreSQL: on PostgreSQL each write is one statement that only
lands at the row version it read; a writer that lost the race reads the job again and applies
its events to the job as it now is. Nothing is lost or applied twice either way."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest
from sqlalchemy import delete, update

from asya_gateway.db import Job, make_engine
from asya_gateway.jobs import DuplicateKey, JobStore
from asya_gateway.jobstate import Cancel, Published
from asya_gateway.notify import Notifier
from asya_gateway.service import Gateway
from asya_protocol import Envelope, EventType, Route, StepEvent


def progress(n: int) -> StepEvent:
    return StepEvent(
        type=EventType.PROGRESS,
        actor="a",
        time=float(n),
        progress=n / 100,
        message=f"step {n}",
    )


async def started(store: JobStore) -> Job:
    """A new job, running (its first envelope confirmed)."""
    job, _ = await store.create("echo", {"n": 1}, 60)
    running = await store.apply(job.id, [Published()], current=job)
    assert running is not None
    assert running.job.status == "running"
    return running.job


def result_of(job: Job) -> Envelope:
    """The pipeline's result for ``job``, as happy-end gets it."""
    return Envelope(id=job.root_id, route=Route(steps=("a",)), payload=msgspec.Raw(b"1"))


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
    job = await started(store)
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
    job = await started(store)
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


async def test_a_page_of_history_ends_only_at_the_final_status(store: JobStore) -> None:
    """A follower's page: the events after the one it saw last, and whether they end the
    history (the job has finished, or there is none)."""
    job = await started(store)
    events, ended = await store.page(job.id, 0)
    assert [e.data["status"] for e in events] == ["pending", "running"]
    assert all(e.job_id == job.id for e in events)
    assert not ended
    events, ended = await store.page(job.id, events[-1].id)
    assert (events, ended) == ([], False)
    seen = events
    await store.apply(job.id, [Cancel()])
    events, ended = await store.page(job.id, 0)
    assert [e.data["status"] for e in events] == ["pending", "running", "cancelled"]
    assert ended
    events, ended = await store.page(job.id, events[-1].id)
    assert (events, ended) == (seen, True)
    assert await store.page("no-such-job", 0) == ([], True)


ON_POSTGRES = pytest.mark.parametrize("database", ["postgres"], indirect=True)
"""SQLite writes in a transaction that reads the row under the database's lock."""


@pytest.fixture
def reads(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs this PostgreSQL store reads a row of (its writes read first)."""
    pg = store._pg
    assert pg is not None, "PostgreSQL only (use @ON_POSTGRES)"
    seen: list[str] = []
    read = pg.get

    async def counted(job_id: str) -> Job | None:
        seen.append(job_id)
        return await read(job_id)

    monkeypatch.setattr(pg, "get", counted)
    return seen


@ON_POSTGRES
async def test_the_broker_writes_a_job_from_the_row_this_store_wrote_last(
    store: JobStore, reads: list[str]
) -> None:
    """A started job's step events and result cost one statement each: no read first."""
    job = await started(store)
    assert await store.on_steps(job.id, [progress(10)])
    assert await store.on_steps(job.id, [progress(20), progress(30)])
    assert await store.on_terminal(job.id, result_of(job), True)
    assert reads == []
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.version, stored.input) == ("succeeded", 4, {"n": 1})
    # Finished: a late step event is appended to the history, the row left as it is.
    assert await store.on_steps(job.id, [progress(40)])
    assert reads == [job.id]  # the get above
    late = await store.get(job.id)
    assert late is not None
    assert (late.status, late.version, late.result) == ("succeeded", 4, stored.result)
    *_, last = await history(store, job.id)
    assert last[0] == "progress"
    assert (last[1]["late"], last[1]["message"]) == (True, "step 40")


@ON_POSTGRES
async def test_a_late_step_event_of_a_purged_job_finds_no_job(
    store: JobStore, reads: list[str]
) -> None:
    job = await started(store)
    assert await store.on_terminal(job.id, result_of(job), True)
    async with store.engine.begin() as conn:
        await conn.execute(delete(Job).where(Job.id == job.id))
    assert not await store.on_steps(job.id, [progress(40)])
    assert reads == [job.id]  # the append found nothing; nor did the read after it


@ON_POSTGRES
async def test_a_job_another_replica_wrote_is_read_again_before_the_write(
    store: JobStore, database: str, reads: list[str]
) -> None:
    """The row this store wrote last is only where a write starts: another replica's write
    since then makes it miss, and the events are applied to the job as it now is."""
    job = await started(store)
    other = JobStore(make_engine(database), Notifier(database).notify)
    try:
        assert await other.apply(job.id, [progress(50)]) is not None
        assert await store.on_steps(job.id, [progress(60)])
        assert reads == [job.id]
        assert await other.apply(job.id, [Cancel()]) is not None
        # The job exists; it had already ended.
        assert await store.on_terminal(job.id, result_of(job), True)
    finally:
        await other.close()
        await other.engine.dispose()
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.version) == ("cancelled", 4)
    messages = [d.get("message") for kind, d in await history(store, job.id) if kind == "progress"]
    assert messages == ["step 50", "step 60"]


async def test_a_starting_point_that_changes_nothing_is_checked_against_the_row(
    store: JobStore,
) -> None:
    """Events that would change nothing of the job a write starts from are applied to the row
    itself before nothing is written: a stale starting point never drops a change."""
    job, _ = await store.create("echo", {"n": 1}, 60)
    ahead = Job(**{c: getattr(job, c) for c in Job.__table__.columns.keys()})  # noqa: SIM118
    ahead.status = "running"  # what the row is not (yet)
    applied = await store.apply(job.id, [Published()], current=ahead)
    assert applied is not None
    assert applied.changed
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.version) == ("running", 1)


@ON_POSTGRES
async def test_the_rows_kept_for_the_broker_are_bounded(
    store: JobStore, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("asya_gateway.jobs.RECENT_JOBS", 2)
    jobs = [(await store.create("echo", {"n": n}, 60))[0] for n in range(3)]
    for job in jobs:
        await store.apply(job.id, [Published()], current=job)
    assert await store.on_steps(jobs[2].id, [progress(10)])
    assert await store.on_steps(jobs[1].id, [progress(10)])
    assert reads == []
    assert await store.on_steps(jobs[0].id, [progress(10)])
    assert reads == [jobs[0].id]  # the oldest was let go
