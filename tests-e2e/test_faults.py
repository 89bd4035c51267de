"""Faults on a private broker and database (their own processes, restarted for real) while the
gateway runs as its own process: it must never look healthy while deaf, must answer 503 while
the database is down, and must bring every accepted job to its end with no restart of its own.
Then a soak: 5,000 step messages with fan-out while a runtime, a sidecar, the broker and the
database each fail once: nothing lost, duplicates only under the same id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiormq
import httpx
import pytest

from asya_protocol import child_id, decode_envelope
from asya_testing import fresh_database
from asya_testing.amqp import AmqpNames, isolated_names
from asya_testing.instances import ServiceInstance, postgres_instance, rabbitmq_instance
from asya_testing.pipeline import AUTH, ProcessPipeline, process_pipeline

ROOT = Path(__file__).resolve().parents[1]
SEED, FANOUT = str(ROOT / "examples/seed"), str(ROOT / "examples/fanout")
SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
SEED_TOOL = {
    "name": "classify_text",
    "description": "Classify a text",
    "steps": ["preprocess", "inference", "postprocess"],
    "timeout": 120,
    "input_schema": SCHEMA,
}
FANOUT_TOOL = {
    "name": "shout_words",
    "description": "Shout every word",
    "steps": ["split", "shout"],
    "timeout": 300,
    "input_schema": SCHEMA,
}
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
# Supervised tasks retry quickly here, and /healthz gives up late (the tests want /readyz).
GATEWAY_ENV = {"ASYA_GATEWAY_UNHEALTHY_AFTER": "300"}


@dataclass
class Faulty:
    system: ProcessPipeline
    broker: ServiceInstance
    database: ServiceInstance
    names: AmqpNames
    ids: list[str] = field(default_factory=list)


async def _private(tmp_path: Path, handlers: str, tool: dict[str, Any]) -> AsyncIterator[Faulty]:
    with rabbitmq_instance() as broker, postgres_instance() as server:
        async with (
            isolated_names(broker.url) as names,
            fresh_database(server.url) as database,
            process_pipeline(
                broker.url,
                names,
                database,
                tmp_path,
                handlers=handlers,
                steps=tool["steps"],
                tools=[tool],
                gateway_env=GATEWAY_ENV,
            ) as pipeline,
        ):
            yield Faulty(pipeline, broker, server, names)


@pytest.fixture
async def seed(tmp_path: Path) -> AsyncIterator[Faulty]:
    async for faulty in _private(tmp_path, SEED, SEED_TOOL):
        yield faulty


@pytest.fixture
async def fanout(tmp_path: Path) -> AsyncIterator[Faulty]:
    async for faulty in _private(tmp_path, FANOUT, FANOUT_TOOL):
        yield faulty


async def post_jobs(client: httpx.AsyncClient, tool: str, texts: list[str]) -> list[str]:
    ids = []
    for text in texts:
        response = await client.post("/jobs", json={"tool": tool, "arguments": {"text": text}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def post_concurrently(
    client: httpx.AsyncClient, tool: str, texts: list[str], at_once: int
) -> list[str]:
    gate = asyncio.Semaphore(at_once)

    async def one(text: str) -> str:
        async with gate:
            return (await post_jobs(client, tool, [text]))[0]

    return list(await asyncio.gather(*(one(t) for t in texts)))


async def unfinished(client: httpx.AsyncClient) -> int:
    """Jobs not yet at an end (pending or running), paging through GET /jobs."""
    total = 0
    for status in ("pending", "running"):
        before = None
        while True:
            params: dict[str, Any] = {"status": status, "limit": 500}
            if before:
                params["before"] = before
            page = (await client.get("/jobs", params=params)).json()
            total += len(page["items"])
            before = page["next"]
            if before is None:
                break
    return total


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Poll ``check`` until true; return the seconds it took, or fail naming ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if await check():
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout} s")


async def ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def not_ready(client: httpx.AsyncClient) -> bool:
    response = await client.get("/readyz")
    return response.status_code == 503


async def all_ended(client: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    jobs = [(await client.get(f"/jobs/{i}")).json() for i in ids]
    assert {j["status"] for j in jobs} <= set(TERMINAL)
    return jobs


async def hundred_jobs_then(client: httpx.AsyncClient, fault: Callable[[], None]) -> list[str]:
    """Start 100 jobs; once 10 are done, inject ``fault``; the ids of the jobs."""
    ids = await post_jobs(client, "classify_text", [f"Hello {i}" for i in range(100)])
    await wait_for("10 jobs done", lambda: _fewer(client, 90), 60)
    await asyncio.to_thread(fault)
    return ids


async def test_a_database_outage_answers_503_then_every_job_ends(seed: Faulty) -> None:
    url = seed.system.url
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
        ids = await hundred_jobs_then(client, seed.database.kill)
        try:
            took = await wait_for("/readyz false", lambda: not_ready(client), 15)
            refused = await client.post(
                "/jobs", json={"tool": "classify_text", "arguments": {"text": "x"}}
            )
            assert refused.status_code == 503
            assert refused.headers["content-type"].startswith("application/json")
            assert "database" in refused.text.lower()
            readiness = (await client.get("/readyz")).json()
            assert readiness["ready"] is False
            assert readiness["checks"]["database"] != "ok"  # and says why
            assert (await client.get("/healthz")).status_code == 200  # recoverable, so alive
            await asyncio.sleep(max(0.0, 5.0 - took))
        finally:
            await asyncio.to_thread(seed.database.start)
        back = await wait_for("/readyz true again", lambda: ready(client), 30)
        ids += await post_jobs(client, "classify_text", [f"after {i}" for i in range(20)])
        await wait_for("every job ended", lambda: _fewer(client, 1), 150)
        jobs = await all_ended(client, ids)
    assert {j["status"] for j in jobs} == {"succeeded"}
    print(f"\ndatabase outage: /readyz false after {took:.1f} s, true {back:.1f} s after restart")  # noqa: T201


async def test_a_broker_outage_is_seen_by_readiness_and_work_resumes(seed: Faulty) -> None:
    url = seed.system.url
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
        ids = await hundred_jobs_then(client, seed.broker.stop)
        try:
            await wait_for("/readyz false", lambda: not_ready(client), 15)
            assert (await client.get("/readyz")).json()["checks"]["consumer"] != "ok"
            await asyncio.sleep(3.0)
        finally:
            await asyncio.to_thread(seed.broker.start)
        back = await wait_for("/readyz true again", lambda: ready(client), 30)
        late = await post_jobs(client, "classify_text", ["Hello after the outage"])
        first = await wait_for("a new job succeeds", lambda: _done(client, late[0]), 30)
        await wait_for("every job ended", lambda: _fewer(client, 1), 150)
        jobs = await all_ended(client, ids + late)
    assert {j["status"] for j in jobs} == {"succeeded"}
    print(f"\nbroker outage: /readyz true {back:.1f} s after the broker; new job in {first:.1f} s")  # noqa: T201


async def _fewer(client: httpx.AsyncClient, than: int) -> bool:
    return await unfinished(client) < than


async def _done(client: httpx.AsyncClient, job_id: str) -> bool:
    return (await client.get(f"/jobs/{job_id}")).json()["status"] == "succeeded"


class HappyEndCopies:
    """A queue of our own bound like happy-end: a copy of every result message, to count."""

    def __init__(self, url: str, names: AmqpNames) -> None:
        self.url, self.names = url, names
        self.queue = names.queue("soak-copies")

    async def bind(self) -> None:
        connection = await aiormq.connect(self.url)
        try:
            channel = await connection.channel()
            await channel.queue_declare(self.queue, durable=True)
            await channel.queue_bind(self.queue, self.names.exchange, self.names.happy_end)
        finally:
            await connection.close()

    async def drain(self) -> list[bytes]:
        connection = await aiormq.connect(self.url)
        bodies: list[bytes] = []
        try:
            channel = await connection.channel()
            while True:
                got = await channel.basic_get(self.queue, no_ack=True)
                if got.delivery_tag is None:
                    return bodies
                bodies.append(got.body)
        finally:
            await connection.close()


@pytest.mark.timeout(900)
async def test_soak_5000_messages_through_four_faults(fanout: Faulty) -> None:
    """1,000 jobs of 4 words: 1,000 split and 4,000 shout messages. Faults fire one after the
    other as jobs finish (after 100, 300, 500 and 700), each once the last has recovered: the
    shout runtime is killed (-9), the split sidecar is killed (-9), the broker restarts, the
    database crashes."""
    system = fanout.system
    copies = HappyEndCopies(fanout.broker.url, fanout.names)
    await copies.bind()
    recovery: dict[str, float] = {}

    async def fault(name: str, action: Callable[[], None]) -> None:
        remaining = await unfinished(client)
        started = time.monotonic()
        await asyncio.to_thread(action)
        await wait_for(f"progress after {name}", lambda: _fewer(client, remaining - 5), 120)
        recovery[name] = time.monotonic() - started

    async with httpx.AsyncClient(base_url=system.url, headers=AUTH, timeout=60) as client:
        texts = [f"w{i} alpha beta gamma" for i in range(1000)]
        # 16 posts at a time: all jobs are in within seconds, so that the faults below fall
        # while the messages flow (posted one by one, most jobs ended before the first fault).
        ids = await post_concurrently(client, "shout_words", texts, 16)
        plan = [
            (900, "runtime kill", lambda: system.restart_runtime("shout")),
            (700, "sidecar kill", lambda: system.restart_sidecar("split")),
            (500, "broker restart", lambda: fanout.broker.restart(3.0)),
            (300, "database crash", lambda: fanout.database.restart(3.0, crash=True)),
        ]
        for threshold, name, action in plan:
            await wait_for(
                f"{1000 - threshold} jobs done", lambda t=threshold: _fewer(client, t), 300
            )
            await fault(name, action)
        await wait_for("every job ended", lambda: _fewer(client, 1), 300)
        jobs = await all_ended(client, ids)
    assert {j["status"] for j in jobs} == {"succeeded"}
    for job, text in zip(jobs, texts, strict=True):
        shouted = sorted(b["result"]["text"] for b in job["result"]["branches"])
        assert shouted == sorted(text.upper().split())

    bodies = await copies.drain()
    envelopes = [decode_envelope(b) for b in bodies]
    distinct = {e.id for e in envelopes}
    assert len(distinct) == 4000  # every shout result, none lost
    for envelope in envelopes:  # a duplicate is a redelivery of the same message: same id
        index = envelope.payload_value()["chunk"] - 1
        assert envelope.id == child_id(envelope.parent_id or "", index)
    duplicates = len(envelopes) - len(distinct)
    figures = ", ".join(f"{k} {v:.1f} s" for k, v in recovery.items())
    print(f"\nsoak: 5000 step messages, {duplicates} duplicates (same id); recovery: {figures}")  # noqa: T201
