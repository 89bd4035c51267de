"""MCP tool calls answer with results: waits, "still running", asya_job_result, output schemas,
tool descriptions, and cancellation of an abandoned call. Official SDK client, real RabbitMQ,
real runtimes and sidecars."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from asya_gateway import parse_tools
from asya_testing import AmqpNames

from .conftest import TOKEN, tools_doc
from .test_mcp import _rpc, _task_session

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GREETING = {"result": "Classified as greeting"}


@pytest.fixture
def tools(amqp_names: AmqpNames) -> dict[str, Any]:
    q = amqp_names.queue
    doc = tools_doc(amqp_names)
    for tool in doc["tools"]:
        if tool["name"] == "classify_text":
            tool["title"] = "Classify text"
            tool["annotations"] = {"read_only_hint": True, "open_world_hint": False}
            tool["output_schema"] = {
                "type": "object",
                "properties": {"result": {"type": "string"}},
                "required": ["result"],
            }
        if tool["name"] == "patient":
            tool["wait"] = 0.3
    doc["tools"].append(
        {
            "name": "strict",
            "steps": [q("preprocess"), q("inference"), q("postprocess")],
            "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "output_schema": {
                "type": "object",
                "properties": {"label": {"type": "string"}},
                "required": ["label"],
            },
        }
    )
    doc["tools"].append(
        {"name": "long_wait", "steps": [q("slow")], "timeout": 60, "input_schema": {}}
    )
    return parse_tools(doc, "test-tools.yaml")


@contextlib.asynccontextmanager
async def client(url: str, mode: str = "2026-07-28") -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client(headers=AUTH) as http,
        Client(
            streamable_http_client(f"{url}/mcp", http_client=http),  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
        ) as mcp,
    ):
        yield mcp


def _body(result: Any) -> dict[str, Any]:
    return dict(json.loads(result.content[0].text))


async def test_tools_are_described_with_title_hints_and_output_schema(gateway: Any) -> None:
    async with client(gateway.url) as mcp:
        listed = {t.name: t for t in (await mcp.list_tools()).tools}
    classify = listed["classify_text"]
    assert classify.title == "Classify text"
    assert classify.annotations is not None
    assert classify.annotations.read_only_hint is True
    assert classify.annotations.open_world_hint is False
    schema = classify.output_schema
    assert schema is not None
    assert schema["required"] == ["job_id", "status"]
    assert schema["properties"]["result"]["required"] == ["result"]
    assert schema["properties"]["error"] == {"type": "object"}
    any_result = listed["asya_job_result"].output_schema
    assert any_result is not None
    assert "null" in any_result["properties"]["result"]["type"]  # any JSON, spelled out
    assert "asya_job_result" in listed
    assert listed["asya_job_result"].input_schema["required"] == ["job_id"]


async def test_a_result_is_checked_against_the_output_schema(gateway: Any, actors: None) -> None:
    async with client(gateway.url) as mcp:
        good = await mcp.call_tool("classify_text", {"text": "Hello world"})
        bad = await mcp.call_tool("strict", {"text": "Hello world"})
    assert not good.is_error, good
    assert good.structured_content is not None
    assert good.structured_content["result"] == GREETING
    assert bad.is_error
    text = bad.content[0].text  # type: ignore[union-attr]
    assert "does not match the tool's output_schema" in text
    assert "'label' is a required property" in text


async def test_a_call_past_its_wait_says_running_and_asya_job_result_waits_again(
    gateway: Any, actors: None
) -> None:
    async with client(gateway.url) as mcp:
        first = await mcp.call_tool("patient", {"seconds": 1.5})
        assert not first.is_error, first
        running = _body(first)
        assert running["status"] == "running"
        assert "asya_job_result" in running["message"]
        again = await mcp.call_tool("asya_job_result", {"job_id": running["job_id"], "wait": 20})
        assert not again.is_error, again
        done = _body(again)
        assert done == {
            "job_id": running["job_id"],
            "status": "succeeded",
            "result": {"seconds": 1.5},
        }
        unknown = await mcp.call_tool("asya_job_result", {"job_id": "no-such-job"})
        assert unknown.is_error
        assert "no such job" in unknown.content[0].text  # type: ignore[union-attr]
        bad = await mcp.call_tool("asya_job_result", {"job_id": running["job_id"], "wait": 0})
        assert bad.is_error
        assert "wait" in bad.content[0].text  # type: ignore[union-attr]


async def _only_job(http: httpx.AsyncClient, tool: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            items = (await http.get("/jobs", params={"tool": tool})).json()["items"]
            if items:
                assert len(items) == 1, items
                return dict(items[0])
            await asyncio.sleep(0.05)


async def _status_becomes(http: httpx.AsyncClient, job_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            job = dict((await http.get(f"/jobs/{job_id}")).json())
            if job["status"] == status:
                return job
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_a_cancelled_call_cancels_its_job(gateway: Any, actors: None, mode: str) -> None:
    """The client gives up on a call while it waits (2026-07-28: the request is dropped;
    2025-11-25: notifications/cancelled): the job is cancelled, not left to run to the end."""
    async with (
        client(gateway.url, mode) as mcp,
        httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http,
    ):
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await mcp.call_tool("long_wait", {"seconds": 20})

            tg.start_soon(call)
            job = await _only_job(http, "long_wait")
            await _status_becomes(http, job["id"], "running")
            tg.cancel_scope.cancel()
        cancelled = await _status_becomes(http, job["id"], "cancelled")
    assert cancelled["result"] is None


async def test_errors_reach_mcp_clients_without_tracebacks_or_sql(
    gateway: Any, actors: None
) -> None:
    async with client(gateway.url) as mcp:
        failed = await mcp.call_tool("broken", {})
        nul = await mcp.call_tool("asya_job_result", {"job_id": "a\x00b"})
    assert failed.is_error
    body = _body(failed)
    assert body["status"] == "failed"
    assert "the model is broken" in json.dumps(body["error"])
    assert "Traceback" not in failed.content[0].text  # type: ignore[union-attr]
    assert "traceback" not in body["error"]
    assert nul.is_error
    assert nul.content[0].text == (  # type: ignore[union-attr]
        "invalid arguments: job_id: contains a NUL character (U+0000)"
    )
    headers = {**AUTH, "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
        session = await _task_session(http)
        for rid, (method, params) in enumerate(
            [("tasks/get", {"taskId": "x\x00"}), ("tasks/list", {"cursor": "\x00"})], start=2
        ):
            answer = await _rpc(http, session, rid, method, params)
            assert answer["error"]["code"] == -32602, answer
            assert "NUL" in answer["error"]["message"]
            assert "SELECT" not in json.dumps(answer)
        await http.delete("/mcp", headers=session)
