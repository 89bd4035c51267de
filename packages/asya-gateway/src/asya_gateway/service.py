"""The gateway's use cases, shared by REST and MCP: start a job, follow it, cancel it, list.

REST and MCP handlers reach jobs only through :class:`Gateway`; the job store only persists what
the state machine (:mod:`asya_gateway.jobstate`) decides.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .broker import GatewayBroker
from .db import Job, JobEvent
from .errors import (
    DatabaseUnavailable,
    InvalidArguments,
    JobFinished,
    NoSuchJob,
    PublishFailed,
    StartFailed,
    UnknownTool,
)
from .jobs import JobQuery, JobStore
from .jobstate import Cancel, Published, PublishRejected
from .messages import first_envelope
from .notify import Notifier
from .retention import DEFAULT_RETENTION, purge_expired
from .tools import Tool

__all__ = ["Gateway", "InvalidArguments", "JobFinished", "NoSuchJob", "StartFailed", "UnknownTool"]


class Gateway:
    def __init__(
        self,
        *,
        tools: dict[str, Tool],
        store: JobStore,
        broker: GatewayBroker,
        notifier: Notifier,
        default_timeout: float,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        self.tools = tools
        self.store = store
        self.broker = broker
        self.notifier = notifier
        self.default_timeout = default_timeout
        self.retention = retention

    async def start(self, tool_name: str, arguments: Any) -> Job:
        tool = self.tools.get(tool_name)
        if tool is None:
            raise UnknownTool(tool_name)
        errors = tool.argument_errors(arguments)
        if errors:
            raise InvalidArguments(errors)
        job, root = await self.store.create(
            tool.name, arguments, tool.timeout or self.default_timeout
        )
        envelope = first_envelope(tool.steps, arguments, job_id=job.id, root_id=root)
        try:
            await self.broker.publish_job(envelope)
        except PublishFailed as exc:
            failed = await self.store.apply(job.id, [PublishRejected(str(exc))])
            raise StartFailed(failed.job if failed else job, str(exc)) from exc
        # If the pipeline's events or its result got there first (a fast pipeline, or a slow
        # publisher confirm), this answers with what the job is now, never a stale "pending".
        try:
            running = await self.store.apply(job.id, [Published()])
        except DatabaseUnavailable:
            # Recorded and published: the job runs, and its result will land once the
            # database answers again. It stays "pending" until then.
            return job
        return running.job if running else job

    async def get(self, job_id: str) -> Job:
        job = await self.store.get(job_id)
        if job is None:
            raise NoSuchJob(job_id)
        return job

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        return await self.store.list_jobs(query)

    async def cancel(self, job_id: str) -> Job:
        """Cancel an unfinished job; :class:`JobFinished` if it already finished."""
        applied = await self.store.apply(job_id, [Cancel()])
        if applied is None:
            raise NoSuchJob(job_id)
        if not applied.changed:
            raise JobFinished(applied.job)
        return applied.job

    async def purge_expired(self) -> int:
        """Delete the finished jobs older than the retention (:mod:`.retention`); how many."""
        return await purge_expired(self.store.engine, self.retention)

    async def time_out_overdue(self) -> list[str]:
        """Time out every unfinished job past its deadline; the ids of those timed out."""
        return await self.store.sweep_timeouts()

    async def events(
        self, job_id: str, *, after: int = 0, poll: float = 2.0
    ) -> AsyncIterator[JobEvent]:
        """Every event after ``after``, until the job finishes.

        Woken by notifications (this replica's or, on PostgreSQL, any replica's); a bounded
        re-check every ``poll`` seconds covers a lost notification. While the database is
        unavailable the stream waits and re-reads (the follower sees a pause, not an end).
        """
        wake = self.notifier.subscribe(job_id)
        try:
            while True:
                wake.clear()
                try:
                    # Shielded: a follower that goes away (an SSE client, a cancelled MCP call)
                    # must not cancel a read in the middle, which would leave its database
                    # connection to be torn down in the background (aiosqlite's close task).
                    events, finished = await asyncio.shield(self._since(job_id, after))
                except DatabaseUnavailable:
                    events, finished = [], False
                for event in events:
                    after = event.id
                    yield event
                if finished:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await wake.wait()
        finally:
            self.notifier.unsubscribe(job_id, wake)

    async def _since(self, job_id: str, after: int) -> tuple[list[JobEvent], bool]:
        """The events after ``after``, and whether the job has finished (all of them read)."""
        events = await self.store.events_since(job_id, after)
        job = await self.store.get(job_id)
        if job is None or job.job_status.terminal:
            last = events[-1].id if events else after
            return events + await self.store.events_since(job_id, last), True
        return events, False

    async def wait(self, job_id: str) -> Job:
        """The job once it has finished."""
        async for _ in self.events(job_id):
            pass
        return await self.get(job_id)
