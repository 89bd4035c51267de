"""The gateway's use cases, shared by REST and MCP: start a job, follow it, cancel it, list.

REST and MCP handlers reach jobs only through :class:`Gateway`; the job store only persists what
the state machine (:mod:`asya_gateway.jobstate`) decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asya_protocol import JobControl, JobControlType, encode_job_control

from .broker import GatewayBroker
from .db import Job, JobEvent
from .errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidArguments,
    InvalidQuery,
    JobFinished,
    NoSuchJob,
    PublishFailed,
    StartFailed,
    UnknownTool,
    check_text,
)
from .jobs import EVENTS_PAGE, DuplicateKey, JobQuery, JobStore
from .jobstate import Cancel, Published, PublishRejected
from .messages import first_envelope
from .metrics import GatewayMetrics
from .notify import Notifier
from .principals import ANONYMOUS, Principal
from .retention import DEFAULT_RETENTION, purge_expired
from .tools import Tool

__all__ = [
    "Gateway",
    "IdempotencyConflict",
    "InvalidArguments",
    "JobFinished",
    "NoSuchJob",
    "StartFailed",
    "Started",
    "UnknownTool",
]

log = logging.getLogger("asya_gateway")
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class Started:
    """A started job; ``replayed`` when an idempotency key named a job started before."""

    job: Job
    replayed: bool = False


def idempotency_key(raw: str) -> str:
    """A client's idempotency key, checked (:class:`InvalidQuery` naming it)."""
    check_text("idempotency_key", raw)
    if not 1 <= len(raw) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidQuery("idempotency_key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    if not raw.isprintable():
        raise InvalidQuery("idempotency_key", "must be printable characters")
    return raw


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
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.tools = tools
        self.store = store
        self.broker = broker
        self.notifier = notifier
        self.default_timeout = default_timeout
        self.retention = retention
        self.metrics = metrics or GatewayMetrics()

    async def start(
        self,
        tool_name: str,
        arguments: Any,
        *,
        principal: Principal = ANONYMOUS,
        via: str = "rest",
        key: str | None = None,
    ) -> Started:
        """Create the tool's job, owned by ``principal``, and publish its first envelope;
        ``via`` (``rest``, ``mcp``) labels the start in the metrics.

        With an idempotency ``key`` this principal already used, nothing starts: the job of
        that key is returned (``replayed``), or :class:`IdempotencyConflict` if it was for
        another tool or other arguments."""
        tool = self.tools.get(tool_name)
        if tool is None:
            raise UnknownTool(tool_name)
        errors = tool.argument_errors(arguments)
        if errors:
            raise InvalidArguments(errors)
        if key is not None:
            idempotency_key(key)
            existing = await self.store.by_key(principal.name, key)
            if existing is not None:
                return _replay(existing, tool.name, arguments)
        try:
            job, root = await self.store.create(
                tool.name,
                arguments,
                tool.timeout or self.default_timeout,
                principal=principal.name,
                idempotency_key=key,
            )
        except DuplicateKey:
            # Two requests with one key at once: the other one's insert won.
            existing = await self.store.by_key(principal.name, key) if key else None
            if existing is None:
                raise
            return _replay(existing, tool.name, arguments)
        self.metrics.job_started(tool.name, via)
        envelope = first_envelope(tool.steps, arguments, job_id=job.id, root_id=root)
        try:
            await self.broker.publish_job(envelope)
        except PublishFailed as exc:
            failed = await self.store.apply(job.id, [PublishRejected(str(exc))])
            raise StartFailed(failed.job if failed else job, str(exc)) from exc
        # If the pipeline's events or its result got there first (a fast pipeline, or a slow
        # publisher confirm), this answers with what the job is now, never a stale "pending".
        try:
            running = await self.store.apply(job.id, [Published()], current=job)
        except DatabaseUnavailable:
            # Recorded and published: the job runs, and its result will land once the
            # database answers again. It stays "pending" until then.
            return Started(job)
        return Started(running.job if running else job)

    async def get(self, job_id: str, principal: Principal = ANONYMOUS) -> Job:
        """The job, if ``principal`` may see it; :class:`NoSuchJob` otherwise (another
        principal's job is not told apart from a missing one)."""
        job = await self.store.get(job_id)
        if job is None or not principal.owns(job.principal):
            raise NoSuchJob(job_id)
        return job

    async def list_jobs(self, query: JobQuery, principal: Principal = ANONYMOUS) -> list[Job]:
        """The jobs ``principal`` may see (every job for an admin)."""
        return await self.store.list_jobs(dataclasses.replace(query, owner=principal.scope))

    async def cancel(self, job_id: str, principal: Principal = ANONYMOUS) -> Job:
        """Cancel an unfinished job and tell the sidecars (which skip its later steps and
        abandon its running one); :class:`JobFinished` if it already finished."""
        await self.get(job_id, principal)
        applied = await self.store.apply(job_id, [Cancel()])
        if applied is None:
            raise NoSuchJob(job_id)
        if not applied.changed:
            raise JobFinished(applied.job)
        await self.announce_cancel(job_id)
        return applied.job

    async def announce_cancel(self, job_id: str) -> None:
        """Publish the job's cancel on the control exchange. Best effort: the job is cancelled
        whatever the sidecars hear, so a broker failure is logged, not raised."""
        body = encode_job_control(
            JobControl(type=JobControlType.CANCEL, job_id=job_id, time=time.time())
        )
        try:
            await self.broker.publish_control(body)
        except PublishFailed as exc:
            log.warning("job %s cancelled, but the sidecars were not told: %s", job_id, exc)

    async def count_unfinished(self) -> int:
        """Pending and running jobs (all replicas'), also set as the metrics' gauge."""
        count = await self.store.count_unfinished()
        self.metrics.unfinished.set(count)
        return count

    async def purge_expired(self) -> int:
        """Delete the finished jobs older than the retention (:mod:`.retention`); how many."""
        return await purge_expired(self.store.engine, self.retention)

    async def time_out_overdue(self) -> list[str]:
        """Time out every unfinished job past its deadline; the ids of those timed out."""
        timed_out = await self.store.sweep_timeouts()
        for job_id in timed_out:
            await self.announce_cancel(job_id)  # nobody waits for its later steps any more
        return timed_out

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
                    events, finished = await asyncio.shield(self.store.page(job_id, after))
                except DatabaseUnavailable:
                    events, finished = [], False
                for event in events:
                    after = event.id
                    yield event
                if finished:
                    return
                if len(events) >= EVENTS_PAGE:
                    continue  # a full page: read on at once
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await wake.wait()
        finally:
            self.notifier.unsubscribe(job_id, wake)

    async def wait(self, job_id: str) -> Job:
        """The job once it has finished."""
        async for _ in self.events(job_id):
            pass
        return await self.get(job_id)


def _replay(job: Job, tool: str, arguments: Any) -> Started:
    if job.tool != tool or job.input != arguments:
        raise IdempotencyConflict(job.id)
    return Started(job, replayed=True)
