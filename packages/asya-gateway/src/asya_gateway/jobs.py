"""Job state in the database. A terminal state is final: every write is conditional on the job
not being finished yet, so late and duplicate events (at-least-once delivery) change nothing."""

from __future__ import annotations

import asyncio
import copy
import datetime
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from asya_protocol import EventType, StepEvent

from .db import TERMINAL, Job, JobEvent, sessions, utcnow
from .fanout import Branches, empty_state

__all__ = ["JOB_HEADER", "JobStore"]

JOB_HEADER = "asya-job-id"
Notify = Callable[[AsyncSession, str], Awaitable[None]]


class JobStore:
    def __init__(self, engine: AsyncEngine, notify: Notify) -> None:
        self.engine = engine
        self.sessions = sessions(engine)
        self._notify = notify
        self._sqlite = engine.dialect.name == "sqlite"
        self._sqlite_lock = asyncio.Lock()  # SQLite has no row locks: serialise writers here

    async def _locked_job(self, session: AsyncSession, job_id: str) -> Job | None:
        stmt = select(Job).where(Job.id == job_id)
        if not self._sqlite:
            stmt = stmt.with_for_update()
        return (await session.execute(stmt)).scalar_one_or_none()

    async def _event(
        self, session: AsyncSession, job_id: str, kind: str, data: dict[str, Any]
    ) -> None:
        session.add(JobEvent(job_id=job_id, type=kind, data=data, created_at=utcnow()))
        await self._notify(session, job_id)

    async def _write(self, fn: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        if self._sqlite:
            async with self._sqlite_lock, self.sessions() as session, session.begin():
                return await fn(session)
        async with self.sessions() as session, session.begin():
            return await fn(session)

    # --- commands -----------------------------------------------------------------------------

    async def create(self, tool: str, arguments: Any, timeout: float) -> tuple[Job, str]:
        """A pending job and the id of its first envelope."""
        now = utcnow()
        job_id, root = str(uuid.uuid4()), str(uuid.uuid4())
        job = Job(
            id=job_id,
            tool=tool,
            status="pending",
            input=arguments,
            result=None,
            error=None,
            progress=0.0,
            message=None,
            root_id=root,
            branches=empty_state(),
            created_at=now,
            updated_at=now,
            deadline=now + datetime.timedelta(seconds=timeout),
            finished_at=None,
        )

        async def go(session: AsyncSession) -> None:
            session.add(job)
            await session.flush()
            await self._event(session, job_id, "status", {"status": "pending", "tool": tool})

        await self._write(go)
        return job, root

    async def mark_running(self, job_id: str) -> bool:
        async def go(session: AsyncSession) -> bool:
            result = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "pending")
                .values(status="running", updated_at=utcnow())
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False  # already further along (its first step reported first)
            await self._event(session, job_id, "status", {"status": "running"})
            return True

        return bool(await self._write(go))

    async def fail(self, job_id: str, error: dict[str, Any], status: str = "failed") -> bool:
        async def go(session: AsyncSession) -> bool:
            now = utcnow()
            result = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.not_in(TERMINAL))
                .values(status=status, error=error, updated_at=now, finished_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            await self._event(session, job_id, "status", {"status": status, "error": error})
            return True

        return bool(await self._write(go))

    async def cancel(self, job_id: str) -> bool:
        return await self.fail(
            job_id, {"error": "cancelled", "message": "cancelled by the client"}, "cancelled"
        )

    async def sweep_timeouts(self) -> list[str]:
        """Time out every unfinished job past its deadline (atomic: safe with many replicas)."""
        now = utcnow()
        async with self.sessions() as session:
            ids = list(
                (
                    await session.execute(
                        select(Job.id).where(Job.status.not_in(TERMINAL), Job.deadline < now)
                    )
                ).scalars()
            )
        timed_out = []
        for job_id in ids:
            error = {"error": "timeout", "message": "the job did not finish before its deadline"}
            if await self.fail(job_id, error, "timed_out"):
                timed_out.append(job_id)
        return timed_out

    async def on_terminal(self, job_id: str, envelope: dict[str, Any], ok: bool) -> None:
        """A message of this job reached happy-end (``ok``) or error-end."""
        message_id = envelope.get("id") or ""
        payload = envelope.get("payload")
        outcome = {"ok": True, "result": payload} if ok else {"ok": False, "error": payload}

        async def go(session: AsyncSession) -> None:
            job = await self._locked_job(session, job_id)
            if job is None or job.status in TERMINAL:
                return
            branches = Branches(copy.deepcopy(job.branches))
            branches.ended(message_id, outcome)
            job.branches = copy.deepcopy(branches.state)  # a new value: the ORM sees it
            await self._event(session, job_id, "branch", {"id": message_id, **outcome})
            await self._maybe_finish(session, job, branches)

        await self._write(go)

    async def on_step(self, job_id: str, event: StepEvent) -> None:
        await self.on_steps(job_id, [event])

    async def on_steps(self, job_id: str, events: list[StepEvent]) -> None:
        """Apply a job's step events, in order, in one transaction."""
        events = [e for e in events if e.type is not EventType.RECEIVED]  # "started" says more
        if not events:
            return

        async def go(session: AsyncSession) -> None:
            if not self._sqlite:
                # Step events are advisory: do not wait for their commit to reach the disk.
                # (A crash may lose the last few progress events, never a job's final state.)
                await session.execute(text("SET LOCAL synchronous_commit = off"))
            job = await self._locked_job(session, job_id)
            if job is None:
                return
            for event in events:
                await self._apply_step(session, job, event)

        await self._write(go)

    async def _apply_step(self, session: AsyncSession, job: Job, event: StepEvent) -> None:
        job_id = job.id
        if job.status in TERMINAL:
            # Step events travel apart from results and may come after the job finished:
            # keep them in the history, change nothing else.
            await self._event(
                session,
                job_id,
                "progress",
                {
                    "type": event.type.value,
                    "actor": event.actor,
                    "step": event.current or 0,
                    "steps": list(event.steps),
                    "late": True,
                },
            )
            return
        now = utcnow()
        if job.status == "pending":
            job.status = "running"
        steps = max(len(event.steps), 1)
        current = event.current or 0
        if event.type is EventType.PROGRESS:
            overall = (current + (event.progress or 0.0)) / steps
        elif event.type is EventType.DONE:
            overall = (current + 1) / steps
        else:
            overall = current / steps
        if job.progress is None or overall > job.progress:
            job.progress = min(overall, 1.0)
        if event.message:
            job.message = event.message
        job.updated_at = now
        branches = Branches(copy.deepcopy(job.branches))
        if event.type is EventType.DONE and event.id:
            if event.child_ids:
                branches.fanned_out(event.id, list(event.child_ids))
            elif event.children == 0:
                branches.ended(event.id, {"ok": True, "result": None, "dropped": True})
            job.branches = copy.deepcopy(branches.state)  # a new value: the ORM sees it
        data = {
            "type": event.type.value,
            "actor": event.actor,
            "step": current,
            "steps": list(event.steps),
            "progress": job.progress,
        }
        if event.message:
            data["message"] = event.message
        if event.error:
            data["error"] = event.error
        await self._event(session, job_id, "progress", data)
        await self._maybe_finish(session, job, branches)

    async def _maybe_finish(self, session: AsyncSession, job: Job, branches: Branches) -> None:
        if not branches.complete(job.root_id):
            return
        leaves = branches.leaves(job.root_id)
        fan_out = bool(branches.state["children"])
        failed = [leaf for leaf in leaves if not leaf.get("ok")]
        now = utcnow()
        if fan_out:
            job.result = {
                "branches": [
                    {k: v for k, v in leaf.items() if k in ("id", "result", "error", "dropped")}
                    for leaf in leaves
                ]
            }
        else:
            job.result = leaves[0].get("result") if leaves and leaves[0].get("ok") else None
        if failed:
            job.status = "failed"
            job.error = (
                failed[0]["error"]
                if not fan_out
                else {
                    "error": "branch_failed",
                    "message": f"{len(failed)} of {len(leaves)} branches failed",
                    "branches": [f["error"] for f in failed],
                }
            )
        else:
            job.status = "succeeded"
        job.progress = 1.0 if not failed else job.progress
        job.finished_at = job.updated_at = now
        await self._event(
            session,
            job.id,
            "status",
            {
                "status": job.status,
                "result": job.result,
                "error": job.error,
            },
        )

    # --- queries ------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self.sessions() as session:
            job: Job | None = await session.get(Job, job_id)
            return job

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        tool: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Job]:
        stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(Job.status == status)
        if tool:
            stmt = stmt.where(Job.tool == tool)
        async with self.sessions() as session:
            if before:
                anchor = await session.get(Job, before)
                if anchor is not None:
                    stmt = stmt.where(
                        (Job.created_at < anchor.created_at)
                        | ((Job.created_at == anchor.created_at) & (Job.id < anchor.id))
                    )
            return list((await session.execute(stmt)).scalars())

    async def events_since(self, job_id: str, after: int) -> list[JobEvent]:
        async with self.sessions() as session:
            stmt = (
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.id > after)
                .order_by(JobEvent.id)
                .limit(500)
            )
            return list((await session.execute(stmt)).scalars())
