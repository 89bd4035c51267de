"""Job retention on SQLite and PostgreSQL: finished jobs older than the retention go, with
their history, in batches; unfinished and recent jobs stay."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from asya_gateway import GatewaySettings
from asya_gateway.db import Job, JobEvent, utcnow
from asya_gateway.jobs import JobStore
from asya_gateway.jobstate import Cancel, Published
from asya_gateway.retention import purge_expired

from .conftest import TOKEN, serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOUR = 3600.0


async def _job(store: JobStore, *, finished: bool, age: float) -> str:
    job, _ = await store.create("echo", {"n": 1}, 60)
    await store.apply(job.id, [Published()])
    if finished:
        await store.apply(job.id, [Cancel()])
    created = utcnow() - datetime.timedelta(seconds=age)
    async with store.engine.begin() as conn:
        await conn.execute(update(Job).where(Job.id == job.id).values(created_at=created))
    return job.id


async def _count(store: JobStore, what: type[Job] | type[JobEvent], job_ids: list[str]) -> int:
    column = Job.id if what is Job else JobEvent.job_id
    async with store.engine.connect() as conn:
        counted = await conn.execute(select(func.count()).where(column.in_(job_ids)))
        return int(counted.scalar_one())


async def test_only_finished_jobs_past_the_retention_are_purged(store: JobStore) -> None:
    old_done = await _job(store, finished=True, age=2 * HOUR)
    old_running = await _job(store, finished=False, age=2 * HOUR)
    new_done = await _job(store, finished=True, age=60)
    assert await _count(store, JobEvent, [old_done]) > 0
    assert await purge_expired(store.engine, HOUR) == 1
    assert await store.get(old_done) is None
    assert await _count(store, JobEvent, [old_done]) == 0
    assert await store.get(old_running) is not None
    assert await store.get(new_done) is not None
    assert await _count(store, JobEvent, [new_done]) > 0
    assert await purge_expired(store.engine, HOUR) == 0


async def test_a_backlog_is_purged_in_batches_and_bounded_per_pass(store: JobStore) -> None:
    ids = [await _job(store, finished=True, age=2 * HOUR) for _ in range(5)]
    # Two batches of two at most: four go now, the fifth at the next pass.
    assert await purge_expired(store.engine, HOUR, batch=2, max_batches=2) == 4
    assert await _count(store, Job, ids) == 1
    assert await purge_expired(store.engine, HOUR, batch=2) == 1
    assert await _count(store, Job, ids) == 0
    assert await _count(store, JobEvent, ids) == 0


async def test_the_running_gateway_purges_on_its_own(
    gateway_settings: GatewaySettings, tools: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("asya_gateway.app.PURGE_EVERY", 0.1)
    settings = replace(gateway_settings, job_retention=0.3)
    async with (
        serve(settings, tools) as gateway,
        httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http,
    ):
        # "nowhere" has no queue bound to its first step: the job fails (finishes) at once.
        created = await http.post("/jobs", json={"tool": "nowhere", "arguments": {}})
        assert created.status_code == 503, created.text
        job_id = created.json()["id"]
        async with asyncio.timeout(15):
            while True:
                if (await http.get(f"/jobs/{job_id}")).status_code == 404:
                    break
                await asyncio.sleep(0.1)
