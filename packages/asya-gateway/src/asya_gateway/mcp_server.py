"""MCP over Streamable HTTP, built on the official SDK's low-level server.

The SDK does the protocol: JSON-RPC framing and errors, the handshake of the 2025 revisions and
the stateless 2026-07-28 exchange, sessions, SSE, progress notifications. The gateway supplies
the handlers: ``tools/list`` from the tools file (with each tool's title, annotations and
``outputSchema``, and the gateway's own ``asya_job_result``), ``tools/call`` that starts a job
and answers with its result, and the 2025-11-25 task methods (``tasks/get``, ``tasks/result``,
``tasks/cancel``, ``tasks/list``), where a task is a job and its task id the job id.

Results by default: ``tools/call`` waits for the job up to the tool's ``wait`` (30 s unless the
tools file says), sending progress and partial results as ``notifications/progress`` when the
call carries a progress token, and answers with the result. A job still running by then is
answered with its id and status; ``asya_job_result`` (or ``tasks/result``) waits for it again.
A call cancelled (``notifications/cancelled``) or dropped (the 2026-07-28 request's connection
closed) while it waits cancels its job.

On 2026-07-28 tasks are the extension ``io.modelcontextprotocol/tasks`` (advertised under the
capabilities' ``extensions``): a ``tools/call`` whose ``_meta`` client capabilities declare it
and whose job outlives the tool's wait is answered with a task (``resultType: "task"``) instead
of "still running"; ``tasks/get`` (the result inline once the job is done), ``tasks/cancel`` and
``tasks/update`` follow it, each refused with -32021 to a request that does not declare the
extension. ``tasks/list`` and ``tasks/result`` are 2025-11-25 methods only.

Each handler is a module-level function of the typed request context, whose lifespan context is
the :class:`~asya_gateway.service.Gateway` (the server's lifespan yields it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from enum import StrEnum
from typing import Any, TypeVar, cast

import anyio
import mcp_types as types
from mcp.server import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from . import errors
from .__about__ import __version__
from .api import job_view
from .db import Job, JobEvent
from .errors import InvalidArguments, JobFinished, NoSuchJob, StartFailed, UnknownTool
from .jobs import JobQuery
from .jobstate import HistoryKind, JobStatus
from .principals import Principal, principal_of
from .service import Gateway
from .tools import DEFAULT_WAIT, Tool

__all__ = [
    "IDEMPOTENCY_META_KEY",
    "JOB_RESULT",
    "JOB_RESULT_TOOL",
    "TASKS_EXTENSION",
    "UNAVAILABLE",
    "McpContext",
    "ProgressForwarder",
    "TaskStatus",
    "UpdateTaskRequestParams",
    "available",
    "build_mcp_server",
    "call_tool",
    "cancel_task",
    "declares_tasks",
    "describe_tool",
    "extension_task",
    "get_task",
    "job_result",
    "job_result_content",
    "job_summary",
    "job_task",
    "list_tasks",
    "list_tools",
    "output_schema",
    "partial_text",
    "still_running",
    "task_result",
    "update_task",
]

McpContext = ServerRequestContext[Gateway, Any]
P = TypeVar("P")
R = TypeVar("R")
UNAVAILABLE = -32003
"""JSON-RPC error code (server-defined range) of a call refused while the database is down."""
TASK_REVISIONS = frozenset({"2025-11-25"})
"""Revisions with tasks in the core protocol (``capabilities.tasks``, four task methods)."""
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
"""The 2026-07-28 tasks extension (its own spec, outside the core schema)."""
MISSING_CLIENT_CAPABILITY = -32021
"""JSON-RPC error of a request that needs a client capability it did not declare."""
TASKS_PAGE = 50
JOB_RESULT_TOOL = "asya_job_result"
"""The gateway's own tool: wait again for a job whose first call answered "still running"."""
MAX_WAIT = 300.0
IDEMPOTENCY_META_KEY = "sh.asya/idempotency-key"
"""The ``_meta`` key of a ``tools/call``'s idempotency key (the HTTP ``Idempotency-Key`` header
works too): a retry with the same key and token follows the job the first call started."""
log = logging.getLogger("asya.gateway.mcp")


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


def job_task(job: Job, retention: float) -> dict[str, Any]:
    """The MCP Task fields of a job; ``ttl`` is the gateway's job retention (from creation)."""
    status = job.job_status
    return {
        "task_id": job.id,
        "status": _TASK_STATUS[status].value,
        "status_message": status.value if status.terminal else job.message,
        "created_at": _utc(job.created_at),
        "last_updated_at": _utc(job.updated_at),
        "ttl": round(retention * 1000),
        "poll_interval": 1000,
    }


_EXTENSION_TASK_STATUS = {
    **_TASK_STATUS,
    # The extension keeps "failed" for JSON-RPC errors; a failed job is a tool error, so its
    # task is completed with a result whose isError is true.
    JobStatus.FAILED: TaskStatus.COMPLETED,
    JobStatus.TIMED_OUT: TaskStatus.COMPLETED,
}


def extension_task(job: Job, retention: float, tool: Tool | None = None) -> dict[str, Any]:
    """The extension's task of a job (wire names), its tool result inline once it is done."""
    status = job.job_status
    core = job_task(job, retention)  # the same fields, the extension's names for two of them
    task: dict[str, Any] = {
        "taskId": core["task_id"],
        "status": _EXTENSION_TASK_STATUS[status].value,
        "createdAt": core["created_at"],
        "lastUpdatedAt": core["last_updated_at"],
        "ttlMs": core["ttl"],
        "pollIntervalMs": core["poll_interval"],
    }
    if core["status_message"] is not None:
        task["statusMessage"] = core["status_message"]
    if status.terminal and status is not JobStatus.CANCELLED:
        result = job_result_content(job, tool)
        task["result"] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return task


def declares_tasks(ctx: McpContext) -> bool:
    """Whether this request's ``_meta`` client capabilities declare the tasks extension."""
    declared = (ctx.meta or {}).get(types.CLIENT_CAPABILITIES_META_KEY)
    if not isinstance(declared, dict):
        return False
    extensions = declared.get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def _modern(ctx: McpContext) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _require_tasks(ctx: McpContext) -> None:
    if not declares_tasks(ctx):
        raise MCPError(
            MISSING_CLIENT_CAPABILITY,
            "Missing required client capability",
            {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
        )


def _legacy_only(ctx: McpContext) -> None:
    if _modern(ctx):
        raise MCPError(types.METHOD_NOT_FOUND, "Method not found", ctx.method)


def job_summary(job: Job) -> dict[str, Any]:
    """What a tool call answers about a job: its id, status, and result or error."""
    view = job_view(job)  # errors as REST shows them: no handler tracebacks
    summary: dict[str, Any] = {"job_id": job.id, "status": job.status}
    if job.job_status is JobStatus.SUCCEEDED:
        summary["result"] = view["result"]
    elif view["error"] is not None:
        summary["error"] = view["error"]
    return summary


def _utc(moment: datetime.datetime) -> str:
    """ISO 8601 with its UTC offset: SQLite gives back the stored moments without one."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)
    return aware.isoformat()


def job_result_content(job: Job, tool: Tool | None = None) -> types.CallToolResult:
    """The tool result of a job: the summary as text and as ``structuredContent``.

    A succeeded job whose result breaks its tool's ``output_schema`` is a tool error naming the
    field (the summary is still there, so nothing is hidden); a client that validates
    ``structuredContent`` against the advertised schema never sees a non-conforming result.
    """
    summary = job_summary(job)
    status = job.job_status
    failed = status.terminal and status is not JobStatus.SUCCEEDED
    mismatch = tool.result_errors(job.result) if tool and status is JobStatus.SUCCEEDED else []
    if mismatch:
        text = f"the result of job {job.id} does not match the tool's output_schema: " + "; ".join(
            mismatch
        )
        return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(summary))],
        structured_content=summary,
        is_error=failed,
    )


def still_running(job: Job, waited: float) -> types.CallToolResult:
    """The answer of a call whose job outlived the tool's wait: the job id and how to go on."""
    summary = {
        "job_id": job.id,
        "status": job.status,
        "message": (
            f"still running after {waited:g} s; call {JOB_RESULT_TOOL} with this job_id to wait "
            "for its result again (or follow the task, or GET /jobs/{job_id})"
        ),
    }
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(summary))], structured_content=summary
    )


ANY_JSON: dict[str, Any] = {
    "type": ["object", "array", "string", "number", "integer", "boolean", "null"]
}
"""A schema for any JSON value, spelled out (a bare ``{}`` is flagged by schema linters)."""


def output_schema(result: dict[str, Any] | None) -> dict[str, Any]:
    """The ``outputSchema`` of a tool: the job summary, its ``result`` described by ``result``."""
    return {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in JobStatus]},
            "result": result if result is not None else ANY_JSON,
            "error": {"type": "object"},
            "message": {"type": "string"},
        },
        "required": ["job_id", "status"],
    }


def describe_tool(tool: Tool) -> types.Tool:
    hints = types.ToolAnnotations.model_validate(tool.annotations) if tool.annotations else None
    return types.Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=tool.input_schema,
        output_schema=output_schema(tool.output_schema),
        annotations=hints,
    )


JOB_RESULT = types.Tool(
    name=JOB_RESULT_TOOL,
    title="Job result",
    description=(
        "Wait for a job that another tool started (a call that answered 'still running') and "
        "return its result. Waits up to `wait` seconds (default 30, at most 300); answers "
        "'still running' again if the job has not finished by then."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "job_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "wait": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT},
        },
        "required": ["job_id"],
        "additionalProperties": False,
    },
    output_schema=output_schema(None),
    annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True),
)


class _GatewayServer(Server[Gateway]):
    """Advertises tasks: core tasks on 2025-11-25, the tasks extension on 2026-07-28."""

    def get_capabilities(self, *args: Any, **kwargs: Any) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(*args, **kwargs)
        version = kwargs.get("protocol_version")
        if version is None or version in TASK_REVISIONS:
            capabilities.tasks = types.ServerTasksCapability(
                list=types.TasksListCapability(), cancel=types.TasksCancelCapability()
            )
        if version in MODERN_PROTOCOL_VERSIONS:
            capabilities.extensions = {**(capabilities.extensions or {}), TASKS_EXTENSION: {}}
        return capabilities


async def list_tools(
    ctx: McpContext, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    tools = [describe_tool(t) for t in ctx.lifespan_context.tools.values()]
    return types.ListToolsResult(tools=[*tools, JOB_RESULT])


def caller(ctx: McpContext) -> Principal:
    """The principal of the HTTP request that carried this message (the middleware's)."""
    return principal_of(getattr(ctx.request, "scope", None))


def idempotency_key_of(ctx: McpContext) -> str | None:
    """``_meta["sh.asya/idempotency-key"]``, or else the request's ``Idempotency-Key``."""
    meta = ctx.meta or {}
    key = meta.get(IDEMPOTENCY_META_KEY)
    if key is None:
        headers = getattr(ctx.request, "headers", None)
        key = headers.get("idempotency-key") if headers is not None else None
    if key is not None and not isinstance(key, str):
        raise MCPError(types.INVALID_PARAMS, f"{IDEMPOTENCY_META_KEY}: must be a string")
    return key


async def call_tool(ctx: McpContext, params: types.CallToolRequestParams) -> types.CallToolResult:
    """Start the tool's job and answer with its result, waiting up to the tool's ``wait``.

    With a progress token the steps' progress and partial results arrive as
    ``notifications/progress`` meanwhile. A call that is cancelled or dropped while it waits
    cancels its job. On 2026-07-28, a job that outlives the wait of a call declaring the tasks
    extension is answered with its task (``resultType: "task"``).
    """
    gateway = ctx.lifespan_context
    if params.name == JOB_RESULT_TOOL:
        return await job_result(ctx, params.arguments or {})
    principal = caller(ctx)
    try:
        started = await gateway.start(
            params.name,
            params.arguments or {},
            principal=principal,
            via="mcp",
            key=idempotency_key_of(ctx),
        )
    except UnknownTool:
        raise MCPError(types.INVALID_PARAMS, f"unknown tool: {params.name}") from None
    except InvalidArguments as exc:
        return _tool_error("invalid arguments: " + "; ".join(exc.errors))
    except (errors.IdempotencyConflict, errors.InvalidQuery) as exc:
        raise MCPError(types.INVALID_PARAMS, str(exc)) from None
    except StartFailed as exc:
        return job_result_content(exc.job)
    tool, job = gateway.tools[params.name], started.job
    try:
        return await _follow(
            ctx, job, tool.wait, tool, as_task=_modern(ctx) and declares_tasks(ctx)
        )
    except asyncio.CancelledError:
        if not started.replayed:  # a retry's drop leaves the first call's job alone
            await _cancel_abandoned(gateway, job.id, principal)
        raise


async def job_result(ctx: McpContext, arguments: dict[str, Any]) -> types.CallToolResult:
    """The ``asya_job_result`` tool: wait again for a job (never cancels it)."""
    gateway = ctx.lifespan_context
    job_id, wait = arguments.get("job_id"), arguments.get("wait", DEFAULT_WAIT)
    if set(arguments) - {"job_id", "wait"}:
        return _tool_error(
            f"invalid arguments: unknown field(s) {sorted(set(arguments) - {'job_id', 'wait'})}"
        )
    if not isinstance(job_id, str) or not job_id:
        return _tool_error("invalid arguments: job_id: required, a job id string")
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 < wait <= MAX_WAIT:
        return _tool_error(f"invalid arguments: wait: a number of seconds in (0, {MAX_WAIT:g}]")
    try:
        job = await gateway.get(job_id, caller(ctx))
    except NoSuchJob:
        return _tool_error(f"no such job: {job_id}")
    except errors.InvalidQuery as exc:
        return _tool_error(f"invalid arguments: {exc}")
    return await _follow(ctx, job, float(wait), gateway.tools.get(job.tool))


def _tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


async def _follow(
    ctx: McpContext, job: Job, wait: float, tool: Tool | None, *, as_task: bool = False
) -> types.CallToolResult:
    """The job's result once it finishes, or after ``wait`` seconds "still running" (or, with
    ``as_task``, the extension's ``CreateTaskResult``)."""
    gateway = ctx.lifespan_context
    progress = ProgressForwarder(ctx)
    try:
        async with asyncio.timeout(wait):
            async for event in gateway.events(job.id):
                await progress.forward(event)
    except TimeoutError:
        current = await gateway.get(job.id)
        if not current.job_status.terminal:
            if as_task:
                created = {"resultType": "task", **extension_task(current, gateway.retention)}
                # An extension result shape: the SDK passes a claimed resultType through as is.
                return cast(types.CallToolResult, created)
            return still_running(current, wait)
    finished = await gateway.get(job.id)
    if finished.job_status is JobStatus.SUCCEEDED:
        # Step events may land after the result (they travel apart): always close at 100 %.
        await progress.done()
    return job_result_content(finished, tool)


async def _cancel_abandoned(gateway: Gateway, job_id: str, principal: Principal) -> None:
    """Cancel the job of a call its client cancelled or dropped (shielded: the caller's scope
    is being cancelled)."""
    with anyio.CancelScope(shield=True):
        try:
            await gateway.cancel(job_id, principal)
        except JobFinished:
            return  # it finished as the call went away: nothing left to cancel
        except errors.DatabaseUnavailable as exc:
            log.warning("job %s: its call was cancelled but the job could not be: %s", job_id, exc)
            return
        log.info("job %s cancelled: its tools/call was cancelled or dropped", job_id)


class ProgressForwarder:
    """Sends a call's job events as ``notifications/progress`` when the call has a token.

    Progress (0..1, total 1) comes from the steps' progress events; partial results come as
    notifications whose ``message`` is their text. The spec wants every notification's value to
    increase: one that would not (a partial, or a step reporting no more than before) is moved
    a thousandth of the remaining way towards 1, so the value stays below 1 until the job
    succeeds.
    """

    def __init__(self, ctx: McpContext) -> None:
        self._ctx = ctx
        meta = ctx.meta or {}
        self._token = meta.get("progress_token") if ctx.meta is not None else None
        self._last: float | None = None

    async def forward(self, event: JobEvent) -> None:
        if self._token is None:
            return
        if event.type == HistoryKind.PROGRESS and event.data.get("progress") is not None:
            message = event.data.get("message") or event.data.get("actor")
            await self._send(float(event.data["progress"]), message)
        elif event.type == HistoryKind.PARTIAL:
            await self._send(None, partial_text(event.data.get("chunks", [])))

    async def done(self) -> None:
        if self._token is not None and (self._last is None or self._last < 1.0):
            self._last = 1.0
            await self._ctx.session.report_progress(1.0, 1.0, "done")

    async def _send(self, value: float | None, message: str | None) -> None:
        wanted = min(max(value if value is not None else 0.0, 0.0), 1.0)
        if self._last is not None:
            if self._last >= 1.0:
                return
            wanted = max(wanted, self._last + (1.0 - self._last) / 1000)
            wanted = min(wanted, math.nextafter(1.0, 0.0))
        self._last = wanted
        await self._ctx.session.report_progress(wanted, 1.0, message)


def partial_text(chunks: list[Any]) -> str:
    """A partial event's chunks as one text: strings as they are, other values as JSON."""
    return "".join(c if isinstance(c, str) else json.dumps(c) for c in chunks)


async def _task(ctx: McpContext, task_id: str) -> Job:
    try:
        return await ctx.lifespan_context.get(task_id, caller(ctx))
    except NoSuchJob:
        raise MCPError(types.INVALID_PARAMS, f"unknown task: {task_id}") from None


async def get_task(ctx: McpContext, params: types.GetTaskRequestParams) -> types.GetTaskResult:
    gateway = ctx.lifespan_context
    if _modern(ctx):
        _require_tasks(ctx)
        job = await _task(ctx, params.task_id)
        detailed = extension_task(job, gateway.retention, gateway.tools.get(job.tool))
        return cast(types.GetTaskResult, detailed)
    return types.GetTaskResult(**job_task(await _task(ctx, params.task_id), gateway.retention))


class UpdateTaskRequestParams(types.RequestParams):
    """``tasks/update`` (the 2026-07-28 tasks extension): answers to a task's input requests."""

    task_id: str
    input_responses: dict[str, Any]


async def update_task(ctx: McpContext, params: UpdateTaskRequestParams) -> dict[str, Any]:
    """Acknowledge: a job never asks for input, so no response is outstanding and every one
    given is ignored, as the extension says of keys not outstanding."""
    if not _modern(ctx):
        raise MCPError(types.METHOD_NOT_FOUND, "Method not found", ctx.method)
    _require_tasks(ctx)
    await _task(ctx, params.task_id)
    return {}


async def task_result(
    ctx: McpContext, params: types.GetTaskPayloadRequestParams
) -> types.CallToolResult:
    _legacy_only(ctx)
    job = await _task(ctx, params.task_id)
    finished = job if job.job_status.terminal else await ctx.lifespan_context.wait(job.id)
    result = job_result_content(finished, ctx.lifespan_context.tools.get(job.tool))
    result.meta = {"io.modelcontextprotocol/related-task": {"taskId": job.id}}
    return result


async def cancel_task(
    ctx: McpContext, params: types.CancelTaskRequestParams
) -> types.CancelTaskResult:
    modern = _modern(ctx)
    if modern:
        _require_tasks(ctx)
    try:
        job = await ctx.lifespan_context.cancel(params.task_id, caller(ctx))
    except NoSuchJob:
        raise MCPError(types.INVALID_PARAMS, f"unknown task: {params.task_id}") from None
    except JobFinished as exc:
        if modern:  # the extension's cancel is an acknowledgement; the task keeps its end
            return cast(types.CancelTaskResult, {})
        raise MCPError(
            types.INVALID_PARAMS, f"cannot cancel a task that is {exc.job.status}"
        ) from None
    if modern:
        return cast(types.CancelTaskResult, {})
    return types.CancelTaskResult(**job_task(job, ctx.lifespan_context.retention))


async def list_tasks(
    ctx: McpContext, params: types.PaginatedRequestParams | None
) -> types.ListTasksResult:
    _legacy_only(ctx)
    cursor = params.cursor if params is not None else None
    jobs = await ctx.lifespan_context.list_jobs(
        JobQuery(limit=TASKS_PAGE, before=cursor), caller(ctx)
    )
    return types.ListTasksResult(
        tasks=[types.Task(**job_task(j, ctx.lifespan_context.retention)) for j in jobs],
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
    (naming the cause, no SQL), as REST answers 503; -32602 for a string the database cannot
    hold (:class:`~asya_gateway.errors.InvalidQuery`, REST's 422); and for anything unexpected
    -32603 with a correlation id and nothing else, the traceback going to the log under it."""

    @functools.wraps(handler)
    async def answer(ctx: McpContext, params: P) -> R:
        try:
            return await handler(ctx, params)
        except errors.DatabaseUnavailable as exc:
            raise MCPError(UNAVAILABLE, str(exc), {"status": 503, "retry_after": 2}) from None
        except errors.InvalidQuery as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        except MCPError:
            raise
        except Exception as exc:
            correlation = uuid.uuid4().hex
            log.error(
                "unexpected error in an MCP request (correlation id %s)", correlation, exc_info=exc
            )
            raise MCPError(
                types.INTERNAL_ERROR, "internal error", {"correlation_id": correlation}
            ) from None

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
    server.add_request_handler("tasks/update", UpdateTaskRequestParams, available(update_task))
    return server
