"""The gateway's use cases, shared by REST and MCP: start a job, follow it, cancel it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from .broker import GatewayBroker, PublishFailed
from .db import TERMINAL, Job, JobEvent
from .jobs import JOB_HEADER, JobStore
from .notify import Notifier
from .tools import Tool

__all__ = ["Gateway", "InvalidArguments", "StartFailed", "UnknownTool"]


class UnknownTool(Exception):
    pass


class InvalidArguments(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class StartFailed(Exception):
    """The job was recorded but its first message could not be published (job is failed)."""

    def __init__(self, job: Job, reason: str) -> None:
        super().__init__(reason)
        self.job = job


def _traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


class Gateway:
    def __init__(
        self,
        *,
        tools: dict[str, Tool],
        store: JobStore,
        broker: GatewayBroker,
        notifier: Notifier,
        default_timeout: float,
    ) -> None:
        self.tools = tools
        self.store = store
        self.broker = broker
        self.notifier = notifier
        self.default_timeout = default_timeout

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
        envelope = {
            "id": root,
            "route": {"steps": list(tool.steps), "current": 0},
            "payload": arguments,
            "headers": {JOB_HEADER: job.id, "traceparent": _traceparent()},
        }
        try:
            await self.broker.publish_job(envelope)
        except PublishFailed as exc:
            await self.store.fail(job.id, {"error": "unroutable", "message": str(exc)})
            failed = await self.store.get(job.id)
            raise StartFailed(failed or job, str(exc)) from exc
        if await self.store.mark_running(job.id):
            job.status = "running"
        else:
            # The pipeline's events or its result got there first (a fast pipeline, or a slow
            # publisher confirm): answer with what the job is now, never a stale "pending".
            job = await self.store.get(job.id) or job
        return job

    async def follow(
        self,
        job_id: str,
        *,
        after: int = 0,
        on_event: Callable[[JobEvent], Awaitable[None]],
        poll: float = 2.0,
    ) -> Job | None:
        """Call ``on_event`` for every event after ``after`` until the job finishes; return it.

        Woken by notifications (this replica's or, on PostgreSQL, any replica's); a bounded
        re-check every ``poll`` seconds covers a lost notification.
        """
        wake = self.notifier.subscribe(job_id)
        try:
            while True:
                wake.clear()
                for event in await self.store.events_since(job_id, after):
                    after = event.id
                    await on_event(event)
                job = await self.store.get(job_id)
                if job is None or job.status in TERMINAL:
                    for event in await self.store.events_since(job_id, after):
                        after = event.id
                        await on_event(event)
                    return job
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await wake.wait()
        finally:
            self.notifier.unsubscribe(job_id, wake)
