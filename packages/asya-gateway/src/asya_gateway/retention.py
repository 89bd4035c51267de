"""Job retention: finished jobs and their history are deleted once they are older than the
retention (``ASYA_GATEWAY_JOB_RETENTION``), which MCP reports as each task's ``ttl``.

A job is kept for the retention counted from its creation (the ``ttl`` of the MCP tasks spec is
"retention duration from creation"), and never while it is unfinished: an unfinished job ends at
its deadline first, and is purged at the next pass after that. Deletion goes in batches, one
short transaction each, so a large backlog never holds a long lock or a long transaction on
PostgreSQL, and SQLite's single writer is taken only briefly.
"""

from __future__ import annotations

import datetime
import logging

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import Job, JobEvent, available, utcnow

__all__ = ["DEFAULT_RETENTION", "PURGE_BATCH", "PURGE_EVERY", "purge_expired"]

DEFAULT_RETENTION = 7 * 24 * 3600.0
"""Seconds a job is kept from its creation, unless ``ASYA_GATEWAY_JOB_RETENTION`` says."""
PURGE_EVERY = 60.0
"""Seconds between two purge passes."""

PURGE_BATCH = 500
"""Jobs deleted per transaction."""
log = logging.getLogger("asya.gateway.retention")


async def purge_expired(
    engine: AsyncEngine,
    retention: float,
    *,
    now: datetime.datetime | None = None,
    batch: int = PURGE_BATCH,
    max_batches: int = 1000,
) -> int:
    """Delete the finished jobs created more than ``retention`` seconds ago, with their events;
    how many jobs were deleted. At most ``max_batches`` transactions per call (the next call
    goes on), so one pass is bounded in time however large the backlog."""
    cutoff = (now or utcnow()) - datetime.timedelta(seconds=retention)
    deleted = 0
    for _ in range(max_batches):
        async with available(), engine.begin() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(Job.id)
                        .where(Job.finished_at.is_not(None), Job.created_at < cutoff)
                        .order_by(Job.created_at)
                        .limit(batch)
                    )
                ).scalars()
            )
            if ids:
                # Events first: SQLite does not enforce the foreign key's ON DELETE CASCADE
                # unless asked to, so the history is deleted explicitly on both databases.
                await conn.execute(delete(JobEvent).where(JobEvent.job_id.in_(ids)))
                await conn.execute(delete(Job).where(Job.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            break
    if deleted:
        log.info("purged %d finished job(s) created before %s", deleted, cutoff.isoformat())
    return deleted
