"""The 2026-07-28 tasks extension (``io.modelcontextprotocol/tasks``), driven by the official
Python SDK client: a client extension that claims the ``task`` result shape of ``tools/call`` and
follows it with ``tasks/get``, as the extension's spec has a client do; and the refusals a client
that does not declare the extension gets. Real RabbitMQ, runtimes and sidecars."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Literal

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ConfigDict

from .conftest import TOKEN
from .test_mcp import tools  # noqa: F401 - the fixture: "patient" past its wait after 0.3 s

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXTENSION = "io.modelcontextprotocol/tasks"
MODERN = "2026-07-28"
ACK = {"resultType": "complete"}
"""An empty result (the server's ``_meta`` stamp aside)."""


class Task(types.Result):
    """The extension's ``Task`` fields."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    status: str
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None
    status_message: str | None = None


class TaskHandle(Task):
    """The extension's ``CreateTaskResult`` (a ``Task`` with ``resultType: "task"``)."""

    result_type: Literal["task"]


class DetailedTask(Task):
    """What ``tasks/get`` answers: the task, with its ``result`` once completed."""

    result: dict[str, Any] | None = None


class Ack(types.Result):
    model_config = ConfigDict(extra="allow")


class Params(types.RequestParams):
    """Any request's params, on the wire as given (``taskId``, ``inputResponses``)."""

    model_config = ConfigDict(extra="allow")


def request(method: str, **params: Any) -> types.Request[Any, Any]:
    return types.Request(method=method, params=Params.model_validate(params))


class TasksExtension(ClientExtension):
    """A client of the extension: a task handle is polled with ``tasks/get`` (at the server's
    ``pollIntervalMs``, bounded) to its end, and its inline result becomes the call's result.
    Every handle and poll answer is kept for the test to look at."""

    identifier = EXTENSION

    def __init__(self) -> None:
        self.handles: list[TaskHandle] = []
        self.polls: list[DetailedTask] = []

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=self.resolve)]

    async def resolve(self, handle: TaskHandle, ctx: ClaimContext) -> types.CallToolResult:
        self.handles.append(handle)
        async with asyncio.timeout(30):
            while True:
                task = await ctx.session.send_request(
                    request("tasks/get", taskId=handle.task_id), DetailedTask
                )
                self.polls.append(task)
                if task.status in ("completed", "failed", "cancelled"):
                    break
                await asyncio.sleep((task.poll_interval_ms or 1000) / 1000)
        assert task.status == "completed", task
        assert task.result is not None
        return types.CallToolResult.model_validate(task.result)


@contextlib.asynccontextmanager
async def client(url: str, *extensions: ClientExtension) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client(headers=AUTH) as http,
        Client(
            streamable_http_client(f"{url}/mcp", http_client=http),  # type: ignore[arg-type]
            mode=MODERN,
            extensions=list(extensions),
        ) as mcp,
    ):
        yield mcp


def _stamp(moment: str) -> datetime:
    parsed = datetime.fromisoformat(moment)
    assert parsed.utcoffset() is not None, moment
    return parsed


async def test_a_long_call_becomes_a_task_that_tasks_get_follows_to_its_result(
    gateway: Any, actors: None
) -> None:
    tasks = TasksExtension()
    async with client(gateway.url, tasks) as mcp:
        # mode=2026-07-28 starts without a round trip; server/discover asks the server.
        discovered = await mcp.session.send_discover(MODERN)
        capabilities = discovered["capabilities"]
        assert capabilities["extensions"] == {EXTENSION: {}}
        assert "tasks" not in capabilities  # core tasks are 2025-11-25's
        quick = await mcp.call_tool("classify_text", {"text": "Hello world"})
        long = await mcp.call_tool("patient", {"seconds": 1.5})
    # A job done within the tool's wait is answered with its result, no task.
    assert not quick.is_error, quick
    assert quick.structured_content is not None
    assert quick.structured_content["status"] == "succeeded"
    # One that outlives it is answered with a task, followed to the same result.
    assert len(tasks.handles) == 1, tasks.handles
    handle = tasks.handles[0]
    assert handle.status == "working"
    assert handle.ttl_ms is not None
    assert handle.ttl_ms > 0
    assert handle.poll_interval_ms == 1000
    _stamp(handle.created_at)
    _stamp(handle.last_updated_at)
    assert not long.is_error, long
    assert long.structured_content == {
        "job_id": handle.task_id,
        "status": "succeeded",
        "result": {"seconds": 1.5},
    }
    assert [p.status for p in tasks.polls][-1] == "completed"
    assert all(p.task_id == handle.task_id for p in tasks.polls)
    assert all(p.result is None for p in tasks.polls if p.status == "working")
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        job = (await http.get(f"/jobs/{handle.task_id}")).json()
    assert job["status"] == "succeeded"


async def test_a_client_without_the_extension_gets_still_running_and_refusals(
    gateway: Any, actors: None
) -> None:
    async with client(gateway.url) as plain:
        first = await plain.call_tool("patient", {"seconds": 1.5})
        assert not first.is_error, first
        assert first.structured_content is not None
        assert first.structured_content["status"] in ("pending", "running")
        job_id = first.structured_content["job_id"]
        for method in ("tasks/get", "tasks/cancel"):
            with pytest.raises(MCPError) as refused:
                await plain.session.send_request(request(method, taskId=job_id), Ack)
            assert refused.value.code == -32021, (method, refused.value)
            assert refused.value.error.data == {
                "requiredCapabilities": {"extensions": {EXTENSION: {}}}
            }
        for method, params in (("tasks/list", {}), ("tasks/result", {"taskId": job_id})):
            with pytest.raises(MCPError) as missing:
                await plain.session.send_request(request(method, **params), Ack)
            assert missing.value.code == -32601, (method, missing.value)


async def test_tasks_cancel_and_update_acknowledge_and_unknown_tasks_are_refused(
    gateway: Any, actors: None
) -> None:
    async with client(gateway.url, TasksExtension()) as mcp:
        session = mcp.session
        started = await session.call_tool("patient", {"seconds": 3}, allow_claimed=True)
        assert isinstance(started, TaskHandle), started
        task_id = started.task_id
        updated = await session.send_request(
            request("tasks/update", taskId=task_id, inputResponses={"never-asked": {}}), Ack
        )
        assert updated.model_dump(by_alias=True, exclude_none=True, exclude={"meta"}) == ACK
        cancelled = await session.send_request(request("tasks/cancel", taskId=task_id), Ack)
        assert cancelled.model_dump(by_alias=True, exclude_none=True, exclude={"meta"}) == ACK
        after = await session.send_request(request("tasks/get", taskId=task_id), DetailedTask)
        assert after.status == "cancelled"
        assert after.result is None
        again = await session.send_request(request("tasks/cancel", taskId=task_id), Ack)
        assert again.model_dump(by_alias=True, exclude_none=True, exclude={"meta"}) == ACK
        for method, params in (
            ("tasks/get", {}),
            ("tasks/cancel", {}),
            ("tasks/update", {"inputResponses": {}}),
        ):
            with pytest.raises(MCPError) as unknown:
                await session.send_request(request(method, taskId="no-such-task", **params), Ack)
            assert unknown.value.code == -32602, (method, unknown.value)
            assert "no-such-task" in unknown.value.error.message
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        job = (await http.get(f"/jobs/{task_id}")).json()
    assert job["status"] == "cancelled"
