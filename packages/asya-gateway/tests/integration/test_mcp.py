"""MCP through the official SDK client (2.x), current and handshake-era revisions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from asya_gateway import parse_tools
from asya_testing import AmqpNames

from .conftest import tools_doc

TOKEN = "test-token-123"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def client(url: str, mode: str) -> AsyncIterator[Client]:
    # The SDK leaves a client it was given open: this one is ours to close.
    async with (
        create_mcp_http_client(headers=AUTH) as http,
        Client(
            streamable_http_client(f"{url}/mcp", http_client=http),  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
        ) as mcp,
    ):
        yield mcp


@pytest.mark.parametrize("revision", ["2026-07-28", "2025-11-25", "2025-06-18"])
async def test_list_and_call_with_progress(
    gateway: Any, actors: None, revision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mode = revision if revision == "2026-07-28" else "legacy"
    if revision == "2025-06-18":
        # The SDK client's handshake asks for its newest handshake revision; ask for the older
        # one the way a client of that era would, and let the server agree to it.
        import mcp.client.session

        monkeypatch.setattr(mcp.client.session, "LATEST_HANDSHAKE_VERSION", revision)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with client(gateway.url, mode) as mcp:
        assert mcp.protocol_version == revision
        tools = await mcp.list_tools()
        by_name = {t.name: t for t in tools.tools}
        assert by_name["classify_text"].input_schema["required"] == ["text"]
        assert by_name["classify_text"].description == "Classify a text"
        result = await mcp.call_tool(
            "classify_text", {"text": "Hello world"}, progress_callback=on_progress
        )
    assert not result.is_error, result
    body = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert body["status"] == "succeeded"
    assert body["result"] == {"result": "Classified as greeting"}
    assert result.structured_content["result"] == {"result": "Classified as greeting"}
    assert progress, "no notifications/progress arrived"
    values = [p[0] for p in progress]
    assert values == sorted(values)
    assert all(0 <= v <= 1 for v in values)


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_call_without_progress_token_gets_the_result(
    gateway: Any, actors: None, mode: str
) -> None:
    """A plain tools/call (what the Inspector and desktop clients send) waits for the job."""
    async with client(gateway.url, mode) as mcp:
        result = await mcp.call_tool("classify_text", {"text": "Hello world"})
    assert not result.is_error, result
    body = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert body["status"] == "succeeded"
    assert body["result"] == {"result": "Classified as greeting"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        job = (await http.get(f"/jobs/{body['job_id']}")).json()
    assert job["tool"] == "classify_text"
    assert job["result"] == body["result"]


async def test_invalid_arguments_are_a_tool_error_naming_the_field(gateway: Any) -> None:
    async with client(gateway.url, "2026-07-28") as mcp:
        result = await mcp.call_tool("classify_text", {"text": 42})
    assert result.is_error
    assert "text: 42 is not of type 'string'" in result.content[0].text  # type: ignore[union-attr]


async def test_failing_pipeline_is_a_tool_error(gateway: Any, actors: None) -> None:
    async with client(gateway.url, "legacy") as mcp:
        result = await mcp.call_tool("broken", {}, progress_callback=_ignore)
    assert result.is_error
    assert "the model is broken" in result.content[0].text  # type: ignore[union-attr]


async def _ignore(*_: Any) -> None:
    return None


async def test_handshake_revision_2025_06_18(gateway: Any) -> None:
    """The SDK client speaks 2025-11-25 in legacy mode; 2025-06-18 is checked on the wire."""
    headers = {**AUTH, "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
        session, init = await _legacy_session(http)
        assert init["result"]["protocolVersion"] == "2025-06-18"
        listed = await http.post(
            "/mcp", headers=session, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        )
        names = [t["name"] for t in _jsonrpc(listed)["result"]["tools"]]
        assert "classify_text" in names
        await http.delete("/mcp", headers=session)


@pytest.fixture
def tools(amqp_names: AmqpNames) -> dict[str, Any]:
    """The suite's tools, "patient" answering "still running" after 0.3 s."""
    doc = tools_doc(amqp_names)
    for tool in doc["tools"]:
        if tool["name"] == "patient":
            tool["wait"] = 0.3
    return parse_tools(doc, "test-tools.yaml")


def _jsonrpc(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                return dict(json.loads(line[5:]))
        raise AssertionError(f"no data in {response.text!r}")
    return dict(response.json())


async def _legacy_session(http: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, Any]]:
    """An initialized 2025-06-18 session: its headers, and the initialize response."""
    init = await http.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
    )
    assert init.status_code == 200, init.text
    headers = {
        "mcp-session-id": init.headers.get("mcp-session-id", ""),
        "mcp-protocol-version": "2025-06-18",
    }
    note = await http.post(
        "/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    assert note.status_code == 202
    return headers, _jsonrpc(init)


async def test_json_rpc_errors(gateway: Any) -> None:
    headers = {**AUTH, "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
        parse = await http.post(
            "/mcp", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert _jsonrpc(parse)["error"]["code"] == -32700
        session, _ = await _legacy_session(http)
        unknown = await http.post(
            "/mcp", headers=session, json={"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}
        )
        assert _jsonrpc(unknown)["error"]["code"] == -32601
        bad = await http.post(
            "/mcp",
            headers=session,
            json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": 5}},
        )
        assert _jsonrpc(bad)["error"]["code"] == -32602
        unknown_tool = await http.post(
            "/mcp",
            headers=session,
            json={
                "jsonrpc": "2.0",
                "id": 4,
                "method": "tools/call",
                "params": {"name": "no_such_tool", "arguments": {}},
            },
        )
        assert _jsonrpc(unknown_tool)["error"]["code"] == -32602
        await http.delete("/mcp", headers=session)
        async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
            assert (await anonymous.post("/mcp", json={})).status_code == 401
        evil = await http.post(
            "/mcp",
            headers={"Origin": "https://evil.example"},
            json={"jsonrpc": "2.0", "id": 5, "method": "tools/list"},
        )
        assert evil.status_code == 403


async def _task_session(http: httpx.AsyncClient) -> dict[str, str]:
    init = await http.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
    )
    caps = _jsonrpc(init)["result"]["capabilities"]
    assert caps["tasks"] == {"list": {}, "cancel": {}}
    headers = {
        "mcp-session-id": init.headers.get("mcp-session-id", ""),
        "mcp-protocol-version": "2025-11-25",
    }
    await http.post(
        "/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    return headers


async def _rpc(
    http: httpx.AsyncClient, session: dict[str, str], rid: int, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    response = await http.post(
        "/mcp",
        headers=session,
        json={"jsonrpc": "2.0", "id": rid, "method": method, "params": params},
    )
    return _jsonrpc(response)


async def test_tasks_map_onto_jobs(gateway: Any, actors: None) -> None:
    """2025-11-25 tasks over jobs. The SDK client has no task API, so this speaks JSON-RPC."""
    headers = {**AUTH, "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
        session = await _task_session(http)
        started = await _rpc(
            http,
            session,
            2,
            "tools/call",
            {"name": "classify_text", "arguments": {"text": "Hello world"}},
        )
        task_id = started["result"]["structuredContent"]["job_id"]
        working = (await _rpc(http, session, 3, "tasks/get", {"taskId": task_id}))["result"]
        assert working["taskId"] == task_id
        assert working["status"] == "completed"  # the call waited for it
        assert working["ttl"] == 7 * 24 * 3600 * 1000  # the job retention, from creation
        assert working["pollInterval"] == 1000
        assert working["createdAt"].endswith("+00:00"), working  # SQLite too
        assert working["lastUpdatedAt"].endswith("+00:00"), working
        # tasks/result waits for the job, then gives the tool result.
        result = (await _rpc(http, session, 4, "tasks/result", {"taskId": task_id}))["result"]
        assert result["structuredContent"]["result"] == {"result": "Classified as greeting"}
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
        got = (await _rpc(http, session, 5, "tasks/get", {"taskId": task_id}))["result"]
        assert got["status"] == "completed"
        listed = (await _rpc(http, session, 6, "tasks/list", {}))["result"]["tasks"]
        assert task_id in [t["taskId"] for t in listed]
        # A finished task cannot be cancelled; a running one can.
        late = await _rpc(http, session, 7, "tasks/cancel", {"taskId": task_id})
        assert late["error"]["code"] == -32602
        # "patient" waits 0.3 s (this module's tools): the call answers "still running".
        slow = await _rpc(
            http, session, 8, "tools/call", {"name": "patient", "arguments": {"seconds": 10}}
        )
        assert slow["result"]["structuredContent"]["status"] == "running"
        slow_id = slow["result"]["structuredContent"]["job_id"]
        cancelled = (await _rpc(http, session, 9, "tasks/cancel", {"taskId": slow_id}))["result"]
        assert cancelled["status"] == "cancelled"
        assert (await http.get(f"/jobs/{slow_id}")).json()["status"] == "cancelled"
        unknown = await _rpc(http, session, 10, "tasks/get", {"taskId": "nope"})
        assert unknown["error"]["code"] == -32602
        await http.delete("/mcp", headers=session)
