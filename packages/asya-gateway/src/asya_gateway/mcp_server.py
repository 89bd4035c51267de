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
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError

from .__about__ import __version__
from .db import Job
from .service import Gateway, InvalidArguments, StartFailed, UnknownTool

__all__ = ["build_mcp_server", "job_result_content", "job_task"]

TASK_REVISIONS = frozenset({"2025-11-25"})
_TASK_STATUS = {
    "pending": "working",
    "running": "working",
    "succeeded": "completed",
    "failed": "failed",
    "timed_out": "failed",
    "cancelled": "cancelled",
}


def job_task(job: Job) -> dict[str, Any]:
    """The MCP Task fields of a job."""
    return {
        "task_id": job.id,
        "status": _TASK_STATUS[job.status],
        "status_message": job.message if job.status in ("pending", "running") else job.status,
        "created_at": job.created_at.isoformat(),
        "last_updated_at": job.updated_at.isoformat(),
        "ttl": None,
        "poll_interval": 1000,
    }


class _GatewayServer(Server[Any]):
    """Advertises task support on the revision that has tasks."""

    def get_capabilities(self, *args: Any, **kwargs: Any) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(*args, **kwargs)
        version = kwargs.get("protocol_version")
        if version is None or version in TASK_REVISIONS:
            capabilities.tasks = types.ServerTasksCapability(
                list=types.TasksListCapability(), cancel=types.TasksCancelCapability()
            )
        return capabilities


def job_result_content(job: Job) -> types.CallToolResult:
    summary = {"job_id": job.id, "status": job.status}
    if job.status == "succeeded":
        summary["result"] = job.result
    elif job.error is not None:
        summary["error"] = job.error
    is_error = job.status in ("failed", "timed_out", "cancelled")
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(summary))],
        structured_content=summary,
        is_error=is_error,
    )


def build_mcp_server(gateway: Gateway) -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
                for t in gateway.tools.values()
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        try:
            job = await gateway.start(params.name, arguments)
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

        async def forward(event: Any) -> None:
            if event.type == "progress" and event.data.get("progress") is not None:
                await ctx.session.report_progress(
                    float(event.data["progress"]),
                    1.0,
                    event.data.get("message") or event.data.get("actor"),
                )

        finished = await gateway.follow(job.id, on_event=forward)
        if finished is not None and finished.status == "succeeded":
            # Step events may land after the result (they travel apart): always close at 100 %.
            await ctx.session.report_progress(1.0, 1.0, "done")
        return job_result_content(finished or job)

    async def find(task_id: str) -> Job:
        job = await gateway.store.get(task_id)
        if job is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown task: {task_id}")
        return job

    async def get_task(ctx: Any, params: types.GetTaskRequestParams) -> types.GetTaskResult:
        return types.GetTaskResult(**job_task(await find(params.task_id)))

    async def task_result(ctx: Any, params: types.GetTaskPayloadRequestParams) -> Any:
        job = await find(params.task_id)
        finished = (
            await gateway.follow(job.id, on_event=_nothing)
            if job.status not in ("succeeded", "failed", "timed_out", "cancelled")
            else job
        )
        result = job_result_content(finished or job)
        result.meta = {"io.modelcontextprotocol/related-task": {"taskId": job.id}}
        return result

    async def cancel_task(
        ctx: Any, params: types.CancelTaskRequestParams
    ) -> types.CancelTaskResult:
        job = await find(params.task_id)
        if not await gateway.store.cancel(job.id):
            raise MCPError(types.INVALID_PARAMS, f"cannot cancel a task that is {job.status}")
        return types.CancelTaskResult(**job_task(await find(job.id)))

    async def list_tasks(ctx: Any, params: Any) -> types.ListTasksResult:
        cursor = getattr(params, "cursor", None) if params is not None else None
        jobs = await gateway.store.list_jobs(limit=50, before=cursor)
        next_cursor = jobs[-1].id if len(jobs) == 50 else None
        return types.ListTasksResult(
            tasks=[types.Task(**job_task(j)) for j in jobs], next_cursor=next_cursor
        )

    server = _GatewayServer(
        "asya-gateway",
        version=__version__,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    server.add_request_handler("tasks/get", types.GetTaskRequestParams, get_task)
    server.add_request_handler("tasks/result", types.GetTaskPayloadRequestParams, task_result)
    server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, cancel_task)
    server.add_request_handler("tasks/list", types.PaginatedRequestParams, list_tasks)
    return server


async def _nothing(_: Any) -> None:
    return None
