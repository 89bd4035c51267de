"""The whole system as separate processes, as in production: three runtimes, three sidecars and
the gateway, on real RabbitMQ and PostgreSQL; an MCP client; processes killed mid-run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from asya_testing import AmqpNames, fresh_database
from asya_testing.amqp import isolated_names
from asya_testing.instances import ServiceInstance, postgres_instance, rabbitmq_instance
from asya_testing.pipeline import AUTH, ProcessPipeline, process_pipeline
from asya_testing.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
SEED = str(ROOT / "examples/seed")
STEPS = ("preprocess", "inference", "postprocess")
TOOLS = [
    {
        "name": "classify_text",
        "description": "Classify a text",
        "steps": list(STEPS),
        "timeout": 120,
        "input_schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    }
]
System = ProcessPipeline


@pytest.fixture
async def system(
    amqp_url: str, amqp_names: AmqpNames, database_url: str, tmp_path: Path
) -> AsyncIterator[System]:
    async with (
        fresh_database(database_url) as database,
        process_pipeline(
            amqp_url, amqp_names, database, tmp_path, handlers=SEED, steps=STEPS, tools=TOOLS
        ) as pipeline,
    ):
        yield pipeline


@dataclass
class Private:
    """The seed pipeline on a broker and a database of its own, restarted for real."""

    system: System
    broker: ServiceInstance
    database: ServiceInstance


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[Private]:
    with rabbitmq_instance() as broker, postgres_instance() as server:
        async with (
            isolated_names(broker.url) as names,
            fresh_database(server.url) as database,
            process_pipeline(
                broker.url, names, database, tmp_path, handlers=SEED, steps=STEPS, tools=TOOLS
            ) as pipeline,
        ):
            yield Private(pipeline, broker, server)


async def statuses(url: str, job_id: str) -> list[str]:
    seen = []
    async with (
        httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as client,
        client.stream("GET", f"/jobs/{job_id}/events") as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data:") and json.loads(line[5:])["type"] == "status":
                seen.append(json.loads(line[5:])["status"])
    return seen


async def test_two_gateway_processes_share_jobs_and_stream_events(system: System) -> None:
    second = await system.start_gateway(free_port())
    async with httpx.AsyncClient(base_url=system.url, headers=AUTH) as client:
        job = (
            await client.post(
                "/jobs", json={"tool": "classify_text", "arguments": {"text": "Hello world"}}
            )
        ).json()
    seen_first, seen_second = await asyncio.gather(
        statuses(system.url, job["id"]), statuses(second, job["id"])
    )
    assert seen_first[-1] == seen_second[-1] == "succeeded"


async def test_mcp_client_gets_the_seed_result(system: System) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with (
        create_mcp_http_client(headers=AUTH) as http,
        Client(
            streamable_http_client(f"{system.url}/mcp", http_client=http)  # type: ignore[arg-type]
        ) as mcp,
    ):
        result = await mcp.call_tool(
            "classify_text", {"text": "Hello world"}, progress_callback=on_progress
        )
    body = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert body["result"] == {"result": "Classified as greeting"}
    assert progress


async def run_jobs(system: System, count: int, chaos: Any) -> list[dict[str, Any]]:
    """Start ``count`` jobs, call ``chaos`` once 10 have finished, wait for every job to end."""
    async with httpx.AsyncClient(base_url=system.url, headers=AUTH, timeout=30) as client:
        ids = []
        for i in range(count):
            text = "Hello world" if i % 2 == 0 else f"sentence number {i} is longer"
            ids.append(
                (
                    await client.post(
                        "/jobs", json={"tool": "classify_text", "arguments": {"text": text}}
                    )
                ).json()["id"]
            )
        fired = False
        async with asyncio.timeout(180):
            while True:
                jobs = [(await client.get(f"/jobs/{i}")).json() for i in ids]
                finished = [j for j in jobs if j["status"] not in ("pending", "running")]
                if not fired and len(finished) >= 10:
                    await chaos()
                    fired = True
                if fired and len(finished) == count:
                    return jobs
                await asyncio.sleep(0.2)


async def test_kill_9_sidecar_mid_run_loses_no_job(system: System) -> None:
    async def chaos() -> None:
        system.restart_sidecar("inference")

    jobs = await run_jobs(system, 200, chaos)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["result"]["result"] for j in jobs} == {
        "Classified as greeting",
        "Classified as statement",
    }


async def test_kill_9_runtime_mid_run_loses_no_job(system: System) -> None:
    async def chaos() -> None:
        system.restart_runtime("inference")

    jobs = await run_jobs(system, 200, chaos)
    assert {j["status"] for j in jobs} == {"succeeded"}


async def test_rabbitmq_restart_mid_run_loses_no_job(private: Private) -> None:
    async def chaos() -> None:
        await asyncio.to_thread(private.broker.restart, 1.0)

    jobs = await run_jobs(private.system, 200, chaos)
    assert {j["status"] for j in jobs} == {"succeeded"}


async def test_postgres_restart_mid_run_loses_no_job(private: Private) -> None:
    async def chaos() -> None:
        await asyncio.to_thread(private.database.restart)

    jobs = await run_jobs(private.system, 200, chaos)
    assert {j["status"] for j in jobs} == {"succeeded"}
