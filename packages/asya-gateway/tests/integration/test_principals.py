"""Isolation and idempotency on a real pipeline: every job belongs to the token's principal
that started it, on REST and MCP (tools, tasks); an admin sees all; an idempotency key names
one job per principal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from asya_gateway.mcp_server import IDEMPOTENCY_META_KEY

from .test_mcp import _rpc, _task_session

ALICE, BOB, ROOT = "alice-token", "bob-token", "root-token"
TOKENS = frozenset({f"alice:{ALICE}", f"bob:{BOB}", f"root:{ROOT}"})
HELLO = {"tool": "classify_text", "arguments": {"text": "Hello world"}}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def shared(
    gateway_settings: Any, tools: dict[str, Any], serve_gateway: Any, settings_with: Any
) -> AsyncIterator[Any]:
    settings = settings_with(gateway_settings, tokens=TOKENS, admins=frozenset({"root"}))
    async with serve_gateway(settings, tools) as running:
        yield running


@contextlib.asynccontextmanager
async def rest(url: str, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, headers=auth(token), timeout=30) as http:
        yield http


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client(headers=auth(token)) as http,
        Client(
            streamable_http_client(f"{url}/mcp", http_client=http),  # type: ignore[arg-type]
            mode="2026-07-28",
        ) as mcp,
    ):
        yield mcp


async def test_a_principal_sees_only_its_own_jobs(shared: Any, actors: None) -> None:
    async with rest(shared.url, ALICE) as alice, rest(shared.url, BOB) as bob:
        created = await alice.post("/jobs", json=HELLO)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        mine = (await bob.post("/jobs", json=HELLO)).json()["id"]

        assert (await alice.get(f"/jobs/{job_id}")).status_code == 200
        for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/events"):
            refused = await bob.get(path)
            assert refused.status_code == 404, (path, refused.text)
            assert refused.json() == {"detail": "no such job"}  # as for an id never seen
        cancel = await bob.post(f"/jobs/{job_id}/cancel")
        assert cancel.status_code == 404
        listed = [j["id"] for j in (await bob.get("/jobs")).json()["items"]]
        assert listed == [mine]
        assert [j["id"] for j in (await alice.get("/jobs")).json()["items"]] == [job_id]

    async with rest(shared.url, ROOT) as root:
        everything = {j["id"] for j in (await root.get("/jobs")).json()["items"]}
        assert everything == {job_id, mine}
        assert (await root.get(f"/jobs/{job_id}")).status_code == 200


async def test_mcp_tools_and_tasks_are_isolated(shared: Any, actors: None) -> None:
    async with mcp_client(shared.url, ALICE) as alice:
        called = await alice.call_tool("classify_text", {"text": "Hello world"})
    assert not called.is_error, called
    job_id = called.structured_content["job_id"]
    async with mcp_client(shared.url, BOB) as bob:
        again = await bob.call_tool("asya_job_result", {"job_id": job_id})
    assert again.is_error
    assert again.content[0].text == f"no such job: {job_id}"

    headers = {**auth(BOB), "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=shared.url, headers=headers, timeout=30) as http:
        session = await _task_session(http)
        for rid, method in enumerate(("tasks/get", "tasks/result", "tasks/cancel"), start=2):
            answer = await _rpc(http, session, rid, method, {"taskId": job_id})
            assert answer["error"]["code"] == -32602, answer
            assert answer["error"]["message"] == f"unknown task: {job_id}"
        listed = (await _rpc(http, session, 9, "tasks/list", {}))["result"]["tasks"]
        assert listed == []
        await http.delete("/mcp", headers=session)
    async with rest(shared.url, ALICE) as http:
        assert (await http.get(f"/jobs/{job_id}")).json()["status"] == "succeeded"


async def test_an_idempotency_key_names_one_job_per_principal(shared: Any, actors: None) -> None:
    key = {"Idempotency-Key": "order-17"}
    async with rest(shared.url, ALICE) as alice, rest(shared.url, BOB) as bob:
        first = await alice.post("/jobs", json=HELLO, headers=key)
        assert first.status_code == 201, first.text
        retry = await alice.post("/jobs", json=HELLO, headers=key)
        assert retry.status_code == 200, retry.text
        assert retry.json()["id"] == first.json()["id"]
        # At once, many retries: still one job (the unique index decides a race).
        burst = await asyncio.gather(
            *(
                alice.post("/jobs", json=HELLO, headers={"Idempotency-Key": "burst"})
                for _ in range(8)
            )
        )
        assert len({r.json()["id"] for r in burst}) == 1
        assert sorted(r.status_code for r in burst) == [200] * 7 + [201]
        # Another principal's key of the same name is its own.
        other = await bob.post("/jobs", json=HELLO, headers=key)
        assert other.status_code == 201
        assert other.json()["id"] != first.json()["id"]
        # The same key for other arguments is refused, naming the job it belongs to.
        changed = {"tool": "classify_text", "arguments": {"text": "Invoice overdue"}}
        conflict = await alice.post("/jobs", json=changed, headers=key)
        assert conflict.status_code == 422
        assert first.json()["id"] in conflict.json()["detail"]
        too_long = await alice.post("/jobs", json=HELLO, headers={"Idempotency-Key": "k" * 256})
        assert too_long.status_code == 422
        listed = (await alice.get("/jobs")).json()["items"]
        assert len(listed) == 2  # order-17 and burst

    async with mcp_client(shared.url, ALICE) as mcp:
        meta = {IDEMPOTENCY_META_KEY: "order-17"}
        called = await mcp.call_tool("classify_text", {"text": "Hello world"}, meta=meta)
        assert called.structured_content["job_id"] == first.json()["id"]
        fresh = {IDEMPOTENCY_META_KEY: "mcp-1"}
        one = await mcp.call_tool("classify_text", {"text": "Hello world"}, meta=fresh)
        two = await mcp.call_tool("classify_text", {"text": "Hello world"}, meta=fresh)
        assert one.structured_content["job_id"] == two.structured_content["job_id"]
        assert two.structured_content["result"] == {"result": "Classified as greeting"}
