"""Partial results end to end: a streaming handler in a real runtime process, its sidecar on
real RabbitMQ, the gateway on SQLite and PostgreSQL. An SSE follower of the job sees ``partial``
events, in order, before the job's final status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asya_gateway import GatewaySettings, parse_tools
from asya_sidecar import SidecarSettings, amqp_sidecar
from asya_testing import AmqpNames
from asya_testing.processes import runtime_process

from .conftest import HERE, TOKEN, serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXT = " ".join(f"w{i}" for i in range(40))


@pytest.fixture
def stream_runtime(tmp_path: Path) -> Iterator[str]:
    with runtime_process("streaming_handlers:words", python_path=[HERE], log_dir=tmp_path) as (
        _,
        path,
    ):
        yield path


@pytest.fixture
async def stream_actor(
    amqp_url: str, amqp_names: AmqpNames, stream_runtime: str
) -> AsyncIterator[None]:
    settings = SidecarSettings(
        actor=amqp_names.queue("stream"),
        rabbitmq_url=amqp_url,
        exchange=amqp_names.exchange,
        socket_path=stream_runtime,
        happy_end=amqp_names.happy_end,
        error_end=amqp_names.error_end,
        events_exchange=amqp_names.events_exchange,
        http_port=None,
        runtime_wait=20,
        shutdown_grace=2,
        partial_interval=0.01,
    )
    sidecar = amqp_sidecar(settings)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sidecar.run(stop))
        try:
            async with asyncio.timeout(30):
                await sidecar.consuming.wait()
            yield
        finally:
            stop.set()


async def sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of every event of an SSE stream, until it ends."""
    events, current = [], {}
    async for line in response.aiter_lines():
        if line.startswith(("event:", "data:")):
            key, _, value = line.partition(":")
            current[key] = value.strip()
        elif line == "" and current:
            events.append((current["event"], json.loads(current["data"])))
            current = {}
    return events


async def test_sse_shows_partial_results_in_order_before_the_end(
    gateway_settings: GatewaySettings, amqp_names: AmqpNames, stream_actor: None
) -> None:
    tools = parse_tools(
        {
            "tools": [
                {
                    "name": "stream_words",
                    "steps": [amqp_names.queue("stream")],
                    "input_schema": {"type": "object"},
                }
            ]
        },
        "partials.yaml",
    )
    async with (
        serve(gateway_settings, tools) as gateway,
        httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=30) as client,
    ):
        for _ in range(3):  # the last step's result right behind its partial results, each time
            created = await client.post(
                "/jobs", json={"tool": "stream_words", "arguments": {"text": TEXT}}
            )
            assert created.status_code == 201, created.text
            job = created.json()
            async with client.stream("GET", f"/jobs/{job['id']}/events") as response:
                events = await sse(response)
            kinds = [kind for kind, _ in events]
            end = next(i for i, (k, d) in enumerate(events) if d.get("status") == "succeeded")
            assert events[end][1]["result"] == {"words": 40}
            # After the end, at most the step's late done event (step events travel apart).
            assert all(kind == "progress" for kind in kinds[end + 1 :]), kinds
            partial = [data for kind, data in events if kind == "partial"]
            assert partial, kinds
            assert "".join(c for data in partial for c in data["chunks"]) == TEXT + " "
            assert [d["offset"] for d in partial] == sorted(d["offset"] for d in partial)
            assert all(d["actor"] == amqp_names.queue("stream") for d in partial)
            assert all(d["type"] == "partial" and d["step"] == 0 for d in partial)
            assert max(i for i, kind in enumerate(kinds) if kind == "partial") < end
