"""MCP over Streamable HTTP, built on the official SDK's low-level server.

The SDK does the protocol: JSON-RPC framing and errors, the handshake of the 2025 revisions and
the stateless 2026-07-28 exchange, sessions, SSE, progress notifications. The gateway supplies
the handlers: ``tools/list`` from the tools file, ``tools/call`` that starts a job, and the
2025-11-25 task methods (``tasks/get``, ``tasks/result``, ``tasks/cancel``, ``tasks/list``),
where a task is a job and its task id the job id. The SDK routes these methods to us but has
no task support of its own, and its result check for ``tools/call`` admits only a
``CallToolResult``: a task-augmented ``tools/call`` (answered with ``CreateTaskResult``) cannot
pass it, so a client starts the job with a plain ``tools/call`` (which returns the job id at once
when it carries no progress token) and follows it with the task methods. The 2026-07-28
revision has no tasks.

Each handler is a module-level function of the typed request context, whose lifespan context is
the :class:`~asya_gateway.service.Gateway` (the server's lifespan yields it).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from enum import StrEnum
from typing import Any, TypeVar

import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError

from . import errors
from .__about__ import __version__
from .db import Job, JobEvent
from .errors import InvalidArguments, JobFinished, NoSuchJob, StartFailed, UnknownTool
from .jobs import JobQuery
from .jobstate import HistoryKind, JobStatus
from .service import Gateway

__all__ = [
    "UNAVAILABLE",
    "McpContext",
    "TaskStatus",
    "available",
    "build_mcp_server",
    "call_tool",
    "cancel_task",
    "get_task",
    "job_result_content",
    "job_task",
    "list_tasks",
    "list_tools",
    "task_result",
]

McpContext = ServerRequestContext[Gateway, Any]
P = TypeVar("P")
R = TypeVar("R")
UNAVAILABLE = -32003
"""JSON-RPC error code (server-defined range) of a call refused while the database is down."""
TASK_REVISIONS = frozenset({"2025-11-25"})
TASKS_PAGE = 50


class TaskStatus(StrEnum):
    """MCP task states (revision 2025-11-25), as a job's status maps onto them."""

    WORKING = "working"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_TASK_STATUS = {
    JobStatus.PENDING: TaskStatus.WORKING,
    JobStatus.RUNNING: TaskStatus.WORKING,
    JobStatus.SUCCEEDED: TaskStatus.COMPLETED,
    JobStatus.FAILED: TaskStatus.FAILED,
    JobStatus.TIMED_OUT: TaskStatus.FAILED,
    JobStatus.CANCELLED: TaskStatus.CANCELLED,
}


def job_task(job: Job) -> dict[str, Any]:
    """The MCP Task fields of a job."""
    status = job.job_status
    return {
        "task_id": job.id,
        "status": _TASK_STATUS[status].value,
        "status_message": status.value if status.terminal else job.message,
        "created_at": job.created_at.isoformat(),
        "last_updated_at": job.updated_at.isoformat(),
        "ttl": None,
        "poll_interval": 1000,
    }


def job_result_content(job: Job) -> types.CallToolResult:
    status = job.job_status
    summary = {"job_id": job.id, "status": job.status}
    if status is JobStatus.SUCCEEDED:
        summary["result"] = job.result
    elif job.error is not None:
        summary["error"] = job.error
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(summary))],
        structured_content=summary,
        is_error=status.terminal and status is not JobStatus.SUCCEEDED,
    )


class _GatewayServer(Server[Gateway]):
    """Advertises task support on the revision that has tasks."""

    def get_capabilities(self, *args: Any, **kwargs: Any) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(*args, **kwargs)
        version = kwargs.get("protocol_version")
        if version is None or version in TASK_REVISIONS:
            capabilities.tasks = types.ServerTasksCapability(
                list=types.TasksListCapability(), cancel=types.TasksCancelCapability()
            )
        return capabilities


async def list_tools(
    ctx: McpContext, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(
        tools=[
            types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
            for t in ctx.lifespan_context.tools.values()
        ]
    )


async def call_tool(ctx: McpContext, params: types.CallToolRequestParams) -> types.CallToolResult:
    gateway = ctx.lifespan_context
    try:
        job = await gateway.start(params.name, params.arguments or {})
    except UnknownTool:
        raise MCPError(types.INVALID_PARAMS, f"unknown tool: {params.name}") from None
    except InvalidArguments as exc:
        text = "invalid arguments: " + "; ".join(exc.errors)
        return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)
    except StartFailed as exc:
        return job_result_content(exc.job)
    token = (ctx.meta or {}).get("progress_token") if ctx.meta is not None else None
    if token is None:
        return job_result_content(job)  # at once: follow it with /jobs/{id} or SSE
    async for event in gateway.events(job.id):
        await _forward_progress(ctx, event)
    finished = await gateway.get(job.id)
    if finished.job_status is JobStatus.SUCCEEDED:
        # Step events may land after the result (they travel apart): always close at 100 %.
        await ctx.session.report_progress(1.0, 1.0, "done")
    return job_result_content(finished)


async def _forward_progress(ctx: McpContext, event: JobEvent) -> None:
    if event.type == HistoryKind.PROGRESS and event.data.get("progress") is not None:
        await ctx.session.report_progress(
            float(event.data["progress"]),
            1.0,
            event.data.get("message") or event.data.get("actor"),
        )


async def _task(gateway: Gateway, task_id: str) -> Job:
    try:
        return await gateway.get(task_id)
    except NoSuchJob:
        raise MCPError(types.INVALID_PARAMS, f"unknown task: {task_id}") from None


async def get_task(ctx: McpContext, params: types.GetTaskRequestParams) -> types.GetTaskResult:
    return types.GetTaskResult(**job_task(await _task(ctx.lifespan_context, params.task_id)))


async def task_result(
    ctx: McpContext, params: types.GetTaskPayloadRequestParams
) -> types.CallToolResult:
    job = await _task(ctx.lifespan_context, params.task_id)
    finished = job if job.job_status.terminal else await ctx.lifespan_context.wait(job.id)
    result = job_result_content(finished)
    result.meta = {"io.modelcontextprotocol/related-task": {"taskId": job.id}}
    return result


async def cancel_task(
    ctx: McpContext, params: types.CancelTaskRequestParams
) -> types.CancelTaskResult:
    try:
        job = await ctx.lifespan_context.cancel(params.task_id)
    except NoSuchJob:
        raise MCPError(types.INVALID_PARAMS, f"unknown task: {params.task_id}") from None
    except JobFinished as exc:
        raise MCPError(
            types.INVALID_PARAMS, f"cannot cancel a task that is {exc.job.status}"
        ) from None
    return types.CancelTaskResult(**job_task(job))


async def list_tasks(
    ctx: McpContext, params: types.PaginatedRequestParams | None
) -> types.ListTasksResult:
    cursor = params.cursor if params is not None else None
    jobs = await ctx.lifespan_context.list_jobs(JobQuery(limit=TASKS_PAGE, before=cursor))
    return types.ListTasksResult(
        tasks=[types.Task(**job_task(j)) for j in jobs],
        next_cursor=jobs[-1].id if len(jobs) == TASKS_PAGE else None,
    )


def _provides(
    gateway: Gateway,
) -> Callable[[Server[Gateway]], AbstractAsyncContextManager[Gateway]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: Server[Gateway]) -> AsyncIterator[Gateway]:
        yield gateway

    return lifespan


Handler = Callable[[McpContext, P], Awaitable[R]]


def available(handler: Handler[P, R]) -> Handler[P, R]:
    """``handler``, answering JSON-RPC error :data:`UNAVAILABLE` while the database is down
    (naming the cause, no SQL), as REST answers 503."""

    @functools.wraps(handler)
    async def answer(ctx: McpContext, params: P) -> R:
        try:
            return await handler(ctx, params)
        except errors.DatabaseUnavailable as exc:
            raise MCPError(UNAVAILABLE, str(exc), {"status": 503, "retry_after": 2}) from None

    return answer


def build_mcp_server(gateway: Gateway) -> Server[Gateway]:
    server = _GatewayServer(
        "asya-gateway",
        version=__version__,
        lifespan=_provides(gateway),
        on_list_tools=list_tools,
        on_call_tool=available(call_tool),
    )
    server.add_request_handler("tasks/get", types.GetTaskRequestParams, available(get_task))
    server.add_request_handler(
        "tasks/result", types.GetTaskPayloadRequestParams, available(task_result)
    )
    server.add_request_handler(
        "tasks/cancel", types.CancelTaskRequestParams, available(cancel_task)
    )
    server.add_request_handler("tasks/list", types.PaginatedRequestParams, available(list_tasks))
    return server
