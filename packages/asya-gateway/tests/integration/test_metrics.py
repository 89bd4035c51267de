"""The gateway's metrics on a real pipeline: jobs started over REST and MCP, finished by
status with their duration, the unfinished gauge, HTTP requests by route template."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from asya_gateway.metrics import route_of

from .conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, None if absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if not series.startswith(name):
            continue
        found = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})?", series)
        if found is None:
            continue
        got = ",".join(sorted((found.group(1) or "").split(","))) if found.group(1) else ""
        if got == wanted:
            return float(value)
    return None


def test_routes_are_templates() -> None:
    assert route_of("/jobs/abc") == "/jobs/{job_id}"
    assert route_of("/jobs/abc/events") == "/jobs/{job_id}/events"
    assert route_of("/jobs/abc/cancel") == "/jobs/{job_id}/cancel"
    assert route_of("/jobs") == "/jobs"
    assert route_of("/mcp") == "/mcp"
    assert route_of("/jobs/a/b/c") == "other"
    assert route_of("/wp-login.php") == "other"


async def test_jobs_and_requests_are_counted(
    gateway: Any, actors: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("asya_gateway.app.COUNT_EVERY", 0.1)
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=30) as http:
        created = await http.post(
            "/jobs", json={"tool": "classify_text", "arguments": {"text": "Hello world"}}
        )
        assert created.status_code == 201, created.text
        async with (
            create_mcp_http_client(headers=AUTH) as client_http,
            Client(
                streamable_http_client(f"{gateway.url}/mcp", http_client=client_http),  # type: ignore[arg-type]
                mode="2026-07-28",
            ) as mcp,
        ):
            called = await mcp.call_tool("classify_text", {"text": "Hello world"})
        assert not called.is_error, called
        job_id = created.json()["id"]
        async with asyncio.timeout(20):
            while True:
                if (await http.get(f"/jobs/{job_id}")).json()["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
        assert (await http.get("/no/such/path")).status_code == 404
        async with asyncio.timeout(20):
            while True:
                text = (await http.get("/metrics")).text
                if sample(text, "asya_gateway_jobs_unfinished") == 0:
                    break
                await asyncio.sleep(0.1)
    started = "asya_gateway_jobs_started_total"
    assert sample(text, started, tool="classify_text", via="rest") == 1
    assert sample(text, started, tool="classify_text", via="mcp") == 1
    finished = "asya_gateway_jobs_finished_total"
    assert sample(text, finished, tool="classify_text", status="succeeded") == 2
    duration = "asya_gateway_job_duration_seconds_count"
    assert sample(text, duration, tool="classify_text") == 2
    requests = "asya_gateway_http_requests_total"
    assert sample(text, requests, route="/jobs", method="POST", status="201") == 1
    assert (sample(text, requests, route="/jobs/{job_id}", method="GET", status="200") or 0) >= 1
    assert sample(text, requests, route="other", method="GET", status="404") == 1
    assert (sample(text, requests, route="/mcp", method="POST", status="200") or 0) >= 1
