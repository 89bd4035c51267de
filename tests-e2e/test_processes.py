"""The whole system as separate processes, as in production: three runtimes, three sidecars and
the gateway, on real RabbitMQ and PostgreSQL; an MCP client; processes killed mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from asya_testing import AmqpNames, fresh_database
from asya_testing.processes import (
    ManagedProcess,
    free_port,
    managed_process,
    runtime_process,
    sidecar_process,
)
from asya_testing.services import unavailable

ROOT = Path(__file__).resolve().parents[1]
SEED = str(ROOT / "examples/seed")
STEPS = ("preprocess", "inference", "postprocess")
TOKEN = "e2e-token"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class System:
    url: str
    names: AmqpNames
    log_dir: Path
    sidecar_env: dict[str, dict[str, str]]
    gateway_env: dict[str, str] = field(default_factory=dict)
    runtimes: dict[str, tuple[ManagedProcess, str]] = field(default_factory=dict)
    sidecars: dict[str, ManagedProcess] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    def start_runtime(self, step: str, socket_path: str | None = None) -> None:
        self.runtimes[step] = self.stack.enter_context(
            runtime_process(
                f"handlers:{step}",
                python_path=[SEED],
                log_dir=self.log_dir,
                socket_path=socket_path,
            )
        )

    def start_sidecar(self, step: str) -> None:
        self.sidecars[step] = self.stack.enter_context(
            sidecar_process(
                self.names.queue(step), env=self.sidecar_env[step], log_dir=self.log_dir
            )
        )


@pytest.fixture
async def system(
    amqp_url: str, amqp_names: AmqpNames, database_url: str, tmp_path: Path
) -> AsyncIterator[System]:
    async with fresh_database(database_url) as database:
        q = amqp_names.queue
        tools = tmp_path / "tools.yaml"
        tools.write_text(
            json.dumps(
                {
                    "tools": [
                        {
                            "name": "classify_text",
                            "description": "Classify a text",
                            "steps": [q(s) for s in STEPS],
                            "timeout": 120,
                            "input_schema": {
                                "type": "object",
                                "properties": {"text": {"type": "string"}},
                                "required": ["text"],
                            },
                        }
                    ]
                }
            )
        )
        port = free_port()
        common = {
            "ASYA_RABBITMQ_URL": amqp_url,
            "ASYA_RABBITMQ_EXCHANGE": amqp_names.exchange,
            "ASYA_HAPPY_END_QUEUE": amqp_names.happy_end,
            "ASYA_ERROR_END_QUEUE": amqp_names.error_end,
            "ASYA_EVENTS_EXCHANGE": amqp_names.events_exchange,
        }
        system = System(
            url=f"http://127.0.0.1:{port}", names=amqp_names, log_dir=tmp_path, sidecar_env={}
        )
        with system.stack:
            for step in STEPS:
                system.start_runtime(step)
                system.sidecar_env[step] = {
                    **common,
                    "ASYA_SOCKET_PATH": system.runtimes[step][1],
                    "ASYA_CONCURRENCY": "4",
                    "ASYA_RUNTIME_WAIT": "60",
                }
                system.start_sidecar(step)
            env = {
                **os.environ,
                **common,
                "ASYA_DATABASE_URL": database,
                "ASYA_GATEWAY_EVENTS_QUEUE": q("gateway-events"),
                "ASYA_GATEWAY_TOOLS": str(tools),
                "ASYA_GATEWAY_TOKENS": TOKEN,
                "ASYA_GATEWAY_PORT": str(port),
            }
            system.gateway_env = env
            await start_gateway(system, port)
            yield system


async def start_gateway(system: System, port: int) -> str:
    env = {**system.gateway_env, "ASYA_GATEWAY_PORT": str(port)}
    gateway = system.stack.enter_context(
        managed_process(
            [sys.executable, "-m", "asya_gateway"],
            env,
            log_dir=system.log_dir,
            name=f"gateway-{port}",
        )
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return url
            assert gateway.alive(), gateway.log()
            await asyncio.sleep(0.1)


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
    second = await start_gateway(system, free_port())
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
        system.sidecars["inference"].kill()
        system.start_sidecar("inference")

    jobs = await run_jobs(system, 200, chaos)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["result"]["result"] for j in jobs} == {
        "Classified as greeting",
        "Classified as statement",
    }


async def test_kill_9_runtime_mid_run_loses_no_job(system: System) -> None:
    async def chaos() -> None:
        proc, path = system.runtimes["inference"]
        proc.signal(signal.SIGKILL)
        proc.wait(timeout=10)
        await asyncio.sleep(0.5)  # the sidecar notices; its messages wait, unacked
        system.start_runtime("inference", socket_path=path)

    jobs = await run_jobs(system, 200, chaos)
    assert {j["status"] for j in jobs} == {"succeeded"}


def _run(*argv: str) -> None:
    import subprocess

    subprocess.run(list(argv), check=True, capture_output=True, timeout=120)


def need_tool(path: str, what: str) -> None:
    """These tests restart the local services with their Debian tools (.ci/services.sh); without
    them the test skips, or fails under CI."""
    if not os.path.exists(path):
        unavailable(f"needs {what} ({path}) to restart the local service")


async def test_rabbitmq_restart_mid_run_loses_no_job(system: System) -> None:
    need_tool("/usr/sbin/rabbitmqctl", "the local broker's rabbitmqctl")

    async def chaos() -> None:
        await asyncio.to_thread(_run, "rabbitmqctl", "-q", "stop_app")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(_run, "rabbitmqctl", "-q", "start_app")

    jobs = await run_jobs(system, 200, chaos)
    assert {j["status"] for j in jobs} == {"succeeded"}


async def test_postgres_restart_mid_run_loses_no_job(system: System) -> None:
    need_tool("/usr/bin/pg_ctlcluster", "the local PostgreSQL cluster tools")

    async def chaos() -> None:
        version = sorted(os.listdir("/usr/lib/postgresql"))[-1]
        await asyncio.to_thread(_run, "pg_ctlcluster", version, "main", "restart")

    jobs = await run_jobs(system, 200, chaos)
    assert {j["status"] for j in jobs} == {"succeeded"}
