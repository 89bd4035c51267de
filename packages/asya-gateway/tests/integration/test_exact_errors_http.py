"""Exact errors over raw HTTP against a real gateway (real database and RabbitMQ): JSON-RPC
edge cases on /mcp, over-limit chunked bodies, text the database cannot hold, the Host
allow-list, the MCP session cap and idle timeout, and no traceback in anything a client sees."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

TOKEN = "test-token-123"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MCP = {**AUTH, "Accept": "application/json, text/event-stream"}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def initialize(http: httpx.AsyncClient, version: str = "2025-06-18") -> httpx.Response:
    return await http.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
    )


async def open_session(http: httpx.AsyncClient) -> dict[str, str]:
    init = await initialize(http)
    assert init.status_code == 200, init.text
    headers = {
        "mcp-session-id": init.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-06-18",
    }
    note = await http.post(
        "/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    assert note.status_code == 202
    return headers


def answer(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return dict(response.json())


EDGE_CASES: list[tuple[str, bytes, int, int, Any]] = [
    # name, body, HTTP status, JSON-RPC code, answered id
    ("parse error", b"{not json", 400, -32700, None),
    ("empty body", b"", 400, -32700, None),
    ("batch", json.dumps([PING]).encode(), 400, -32600, None),
    ("empty batch", b"[]", 400, -32600, None),
    ("not a message", b'{"foo": 1}', 400, -32600, None),
    ("a string", b'"ping"', 400, -32600, None),
    ("jsonrpc 1.0", json.dumps({**PING, "jsonrpc": "1.0"}).encode(), 200, -32600, 1),
    ("object id", json.dumps({**PING, "id": {"a": 1}}).encode(), 400, -32600, None),
    ("null id", json.dumps({**PING, "id": None}).encode(), 400, -32600, None),
    ("boolean id", json.dumps({**PING, "id": True}).encode(), 400, -32600, None),
    ("fractional id", json.dumps({**PING, "id": 1.5}).encode(), 400, -32600, None),
    ("numeric method", json.dumps({**PING, "id": 7, "method": 5}).encode(), 200, -32600, 7),
    ("array params", json.dumps({**PING, "id": "p", "params": [1]}).encode(), 200, -32600, "p"),
    ("bare id", b'{"jsonrpc": "2.0", "id": 9}', 200, -32600, 9),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "request_id"),
    [case[1:] for case in EDGE_CASES],
    ids=[case[0] for case in EDGE_CASES],
)
async def test_json_rpc_edge_cases_are_answered(
    gateway: Any, body: bytes, status: int, code: int, request_id: Any
) -> None:
    headers = {**MCP, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as http:
        session = await open_session(http)
        # Inside a session (handshake revision), without one, and at the stateless revision.
        for extra in (session, {}, {"mcp-protocol-version": "2026-07-28"}):
            response = await http.post("/mcp", content=body, headers=extra)
            assert response.status_code == status, (extra, response.text)
            got = answer(response)
            assert got["error"]["code"] == code, got
            assert got["id"] == request_id
            assert "validation error" not in got["error"]["message"].lower()
        await http.delete("/mcp", headers=session)


async def test_valid_messages_still_reach_the_sdk(gateway: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=MCP, timeout=10) as http:
        session = await open_session(http)
        pong = await http.post("/mcp", headers=session, json={**PING, "id": "p1"})
        assert pong.status_code == 200
        unknown = await http.post("/mcp", headers=session, json={**PING, "method": "no/such"})
        text = unknown.text
        assert '"code":-32601' in text.replace(" ", ""), text
        await http.delete("/mcp", headers=session)


def _chunks(total: int) -> Any:
    async def gen() -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * 8192
            sent += 8192

    return gen()


@pytest.mark.parametrize("path", ["/jobs", "/mcp"])
async def test_an_over_limit_chunked_body_gets_413(gateway: Any, path: str) -> None:
    limit = gateway.settings.max_body
    headers = {**MCP, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as http:
        response = await http.post(path, content=_chunks(limit * 2))
        assert "content-length" not in response.request.headers  # chunked indeed
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body over {limit} bytes"}


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/jobs/a%00b", "job_id"),
        ("POST", "/jobs/a%00b/cancel", "job_id"),
        ("GET", "/jobs/a%00b/events", "job_id"),
        ("GET", "/jobs?tool=a%00b", "tool"),
        ("GET", "/jobs?status=%00", "status"),
        ("GET", "/jobs?before=x%00", "before"),
    ],
)
async def test_a_nul_character_is_refused_before_sql(
    gateway: Any, method: str, path: str, field: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        response = await http.request(method, path)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": f"{field}: contains a NUL character (U+0000)",
        "field": field,
    }


@pytest.mark.parametrize("path", ["/jobs", "/jobs/x", "/mcp", "/openapi.json"])
async def test_another_host_is_refused(gateway: Any, path: str) -> None:
    port = gateway.url.rsplit(":", 1)[1]
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=MCP) as http:
        refused = await http.post(path, headers=evil, json=PING)
        assert refused.status_code == 421
        assert "evil.example" in refused.json()["detail"]
        for host in (f"localhost:{port}", "127.0.0.1:9999", f"[::1]:{port}"):
            served = await http.get("/jobs", headers={"Host": host})
            assert served.status_code == 200, (host, served.text)
        # Probes and scrapes come by the pod's address: never refused for their Host.
        assert (await http.get("/healthz", headers=evil)).status_code == 200
        assert (await http.get("/metrics", headers=evil)).status_code == 200
        assert (
            await http.get("/metrics", headers={**evil, "Authorization": ""})
        ).status_code == 401


async def test_the_allow_list_setting(
    gateway_settings: Any, tools: Any, serve_gateway: Any, settings_with: Any
) -> None:
    settings = settings_with(gateway_settings, allowed_hosts=frozenset({"asya-gateway.ns.svc"}))
    async with (
        serve_gateway(settings, tools, wait=False) as running,
        httpx.AsyncClient(base_url=running.url, headers=AUTH) as http,
    ):
        assert (await http.get("/jobs", headers={"Host": "asya-gateway.ns.svc"})).status_code == 200
        assert (await http.get("/jobs", headers={"Host": "other.ns.svc"})).status_code == 421
    anything = settings_with(gateway_settings, allowed_hosts=frozenset({"*"}))
    async with (
        serve_gateway(anything, tools, wait=False) as running,
        httpx.AsyncClient(base_url=running.url, headers=AUTH) as http,
    ):
        assert (await http.get("/jobs", headers={"Host": "other.ns.svc"})).status_code == 200


async def test_the_session_cap_refuses_with_retry_after(
    gateway_settings: Any, tools: Any, serve_gateway: Any, settings_with: Any
) -> None:
    settings = settings_with(gateway_settings, max_sessions=2)
    async with (
        serve_gateway(settings, tools, wait=False) as running,
        httpx.AsyncClient(base_url=running.url, headers=MCP, timeout=10) as http,
    ):
        first, _second = await open_session(http), await open_session(http)
        over = await initialize(http)
        assert over.status_code == 503
        assert over.headers["retry-after"].isdigit()
        assert "mcp-session-id" not in over.headers
        assert over.json()["error"]["message"] == "Too many open sessions"
        # Sessions that exist are unaffected; one closed makes room for a new one.
        assert (await http.post("/mcp", headers=first, json=PING)).status_code == 200
        assert (await http.delete("/mcp", headers=first)).status_code == 200
        assert (await initialize(http)).status_code == 200


async def test_an_idle_session_is_closed(
    gateway_settings: Any, tools: Any, serve_gateway: Any, settings_with: Any
) -> None:
    settings = settings_with(gateway_settings, session_idle_timeout=0.3)
    async with (
        serve_gateway(settings, tools, wait=False) as running,
        httpx.AsyncClient(base_url=running.url, headers=MCP, timeout=10) as http,
    ):
        session = await open_session(http)
        # Each poll is a request, which makes the session busy again: poll less often than
        # the idle timeout.
        async with asyncio.timeout(20):
            while True:
                status = (await http.post("/mcp", headers=session, json=PING)).status_code
                if status == 404:
                    break
                assert status == 200
                await asyncio.sleep(1.0)


async def test_a_failed_job_shows_no_traceback(gateway: Any, actors: None) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=30) as http:
        job = (await http.post("/jobs", json={"tool": "broken", "arguments": {"x": 1}})).json()
        async with asyncio.timeout(30):
            while job["status"] not in ("failed", "succeeded"):
                await asyncio.sleep(0.05)
                job = (await http.get(f"/jobs/{job['id']}")).json()
        listed = (await http.get("/jobs", params={"tool": "broken"})).json()["items"]
    assert job["status"] == "failed"
    error = job["error"]
    assert error["error"]
    assert error["message"]
    assert "fails" in error["step"]
    for seen in (job, listed[0]):
        text = json.dumps(seen)
        assert "Traceback" not in text
        assert "traceback" not in text
        assert "original_payload" not in text
    # The server keeps the whole error: the traceback is in the database, for the operator.
    stored = await gateway.app.gateway.get(job["id"])
    assert "Traceback" in json.dumps(stored.error)


async def test_an_unexpected_error_is_a_bare_500_with_a_correlation_id(
    gateway_settings: Any, tools: Any, serve_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_gateway(gateway_settings, tools, wait=False) as running:

        async def boom() -> None:
            raise RuntimeError("SELECT secret FROM /srv/app/internal.py")

        # A route of the real app that fails as an unforeseen bug would.
        running.app.fastapi.add_api_route("/boom", boom)
        with caplog.at_level(logging.ERROR, logger="asya_gateway"):
            async with httpx.AsyncClient(base_url=running.url, headers=AUTH) as http:
                response = await http.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert body == {"detail": "internal error", "correlation_id": body["correlation_id"]}
    assert response.headers["x-correlation-id"] == body["correlation_id"]
    assert "secret" not in response.text
    logged = [r for r in caplog.records if body["correlation_id"] in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/jobs", "GET, POST"),
        ("DELETE", "/jobs/some-id", "GET"),
        ("GET", "/jobs/some-id/cancel", "POST"),
        ("PUT", "/mcp", "DELETE, GET, POST"),
    ],
)
async def test_a_wrong_method_gets_405_naming_every_allowed_one(
    gateway: Any, method: str, path: str, allow: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
        response = await http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.headers["content-type"] == "application/json"
