"""MCP over Streamable HTTP, built on the official SDK's low-level server.

The SDK does the protocol: JSON-RPC framing and errors, the handshake of the 2025 revisions and
the stateless 2026-07-28 exchange, sessions, SSE, progress notifications. The gateway supplies
two handlers: ``tools/list`` from the tools file and ``tools/call`` that starts a job.
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

__all__ = ["build_mcp_server", "job_result_content"]


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
        return job_result_content(finished or job)

    return Server(
        "asya-gateway",
        version=__version__,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
