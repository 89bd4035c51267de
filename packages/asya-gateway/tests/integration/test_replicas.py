"""Several gateway processes on one database; a restart in the middle of a job."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

TOKEN = "test-token-123"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def sse_statuses(client: httpx.AsyncClient, job_id: str) -> list[str]:
    statuses = []
    async with client.stream("GET", f"/jobs/{job_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data = json.loads(line[5:])
                if data["type"] == "status":
                    statuses.append(data["status"])
    return statuses


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
async def test_two_gateways_share_jobs_and_events(
    gateway_settings: Any,
    tools: Any,
    serve_gateway: Any,
    actors: None,
    settings_with: Any,
    amqp_names: Any,
) -> None:
    second = settings_with(gateway_settings, events_queue=amqp_names.queue("gateway-events"))
    async with (
        serve_gateway(gateway_settings, tools) as a,
        serve_gateway(second, tools) as b,
        httpx.AsyncClient(base_url=a.url, headers=AUTH, timeout=30) as ca,
        httpx.AsyncClient(base_url=b.url, headers=AUTH, timeout=30) as cb,
    ):
        job = (
            await ca.post("/jobs", json={"tool": "patient", "arguments": {"seconds": 0.5}})
        ).json()
        # Both replicas follow the same job live (PostgreSQL LISTEN/NOTIFY between them).
        seen_a, seen_b = await asyncio.gather(
            sse_statuses(ca, job["id"]), sse_statuses(cb, job["id"])
        )
        assert seen_a[-1] == seen_b[-1] == "succeeded"
        assert (await cb.get(f"/jobs/{job['id']}")).json()["status"] == "succeeded"


async def test_restart_in_the_middle_of_a_job_loses_nothing(
    gateway_settings: Any,
    tools: Any,
    serve_gateway: Any,
    actors: None,
) -> None:
    async with (
        serve_gateway(gateway_settings, tools) as first,
        httpx.AsyncClient(base_url=first.url, headers=AUTH) as client,
    ):
        job = (
            await client.post("/jobs", json={"tool": "patient", "arguments": {"seconds": 0.8}})
        ).json()
    # The gateway is down while the pipeline finishes; its result waits in happy-end.
    await asyncio.sleep(1.2)
    async with (
        serve_gateway(gateway_settings, tools) as second,
        httpx.AsyncClient(base_url=second.url, headers=AUTH) as client,
    ):
        async with asyncio.timeout(30):
            while (done := (await client.get(f"/jobs/{job['id']}")).json())["status"] == "running":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert done["status"] == "succeeded"
    assert done["result"] == {"seconds": 0.8}
