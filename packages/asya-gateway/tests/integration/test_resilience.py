"""The gateway under faults it must survive without a restart: the database refusing
connections, a background task that keeps failing, a client trickling its body, arguments
nested too deep, and messages in its queues that can never be applied (dead-lettered on real
RabbitMQ, never acked in silence)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiormq
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from asya_gateway import GatewaySettings, parse_tools
from asya_gateway.deadletter import REASON_HEADER, SOURCE_HEADER, dead_letter_queue
from asya_gateway.mcp_server import UNAVAILABLE
from asya_gateway.messages import JOB_HEADER
from asya_gateway.principals import principals
from asya_gateway.settings import database_url
from asya_gateway.supervise import NO_HEALTH, Health
from asya_protocol import (
    MAX_JSON_DEPTH,
    Envelope,
    EventType,
    StepEvent,
    encode_event,
    encode_event_batch,
)
from asya_testing import AmqpNames
from asya_testing.processes import free_port

from .conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOOLS = parse_tools({"tools": [{"name": "echo", "steps": ["echo"]}]}, "test")


class FakeBroker:
    """A broker that takes every publish and consumes nothing; ``failures`` consume attempts
    fail first (a broker that is down)."""

    def __init__(self, failures: int = 0) -> None:
        self.connected = asyncio.Event()
        self.published: list[Envelope] = []
        self.controls: list[bytes] = []
        self.failures = failures

    async def publish_job(self, envelope: Envelope) -> None:
        self.published.append(envelope)

    async def publish_control(self, body: bytes) -> None:
        self.controls.append(body)

    async def consume(self, health: Health = NO_HEALTH) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("RabbitMQ connection lost: refused")
        self.connected.set()
        health.ok()
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.connected.clear()


def settings(tmp: Path, **changes: Any) -> GatewaySettings:
    base: dict[str, Any] = {
        "database_url": database_url(f"sqlite:///{tmp / 'gateway.db'}"),
        "tokens": frozenset({TOKEN}),
        "max_body": 65536,
    }
    return GatewaySettings(**{**base, **changes})


@pytest.fixture
async def fake(tmp_path: Path, serve_gateway: Any) -> AsyncIterator[Any]:
    """A gateway on SQLite with a broker that takes every publish."""
    s = settings(tmp_path, body_timeout=1.0)
    async with serve_gateway(s, TOOLS, broker_factory=lambda _store: FakeBroker()) as running:
        yield running


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_database_down_answers_503_and_a_json_rpc_error(
    tmp_path: Path, serve_gateway: Any
) -> None:
    refused = database_url(f"postgresql://asya@127.0.0.1:{free_port()}/asya")
    s = settings(tmp_path, database_url=refused, migrate=False, unhealthy_after=60.0)
    async with serve_gateway(s, TOOLS, broker_factory=lambda _store: FakeBroker()) as running:
        async with httpx.AsyncClient(base_url=running.url, headers=AUTH, timeout=30) as http:
            created = await http.post("/jobs", json={"tool": "echo", "arguments": {}})
            assert created.status_code == 503
            assert created.headers["content-type"] == "application/json"
            detail = created.json()["detail"]
            assert detail.startswith("database unavailable: ")
            assert "SELECT" not in detail
            assert "INSERT" not in detail
            assert (await http.get("/jobs/x")).status_code == 503
            readiness = await http.get("/readyz")
            assert readiness.status_code == 503
            body = readiness.json()
            assert body["ready"] is False
            assert body["checks"]["database"].startswith("database unavailable")
            assert body["checks"]["consumer"] == "ok"
            assert (await http.get("/healthz")).status_code == 200  # not stuck long enough
        async with mcp_client(running.url) as mcp:
            with pytest.raises(MCPError) as info:
                await mcp.call_tool("echo", {})
    assert info.value.code == UNAVAILABLE
    assert info.value.message.startswith("database unavailable: ")


@contextlib.asynccontextmanager
async def mcp_client(url: str) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client(headers=AUTH) as http,
        Client(
            streamable_http_client(f"{url}/mcp", http_client=http),  # type: ignore[arg-type]
            mode="2026-07-28",  # type: ignore[arg-type]
        ) as mcp,
    ):
        yield mcp


async def test_a_consumer_that_keeps_failing_is_unready_then_unhealthy(
    tmp_path: Path, serve_gateway: Any
) -> None:
    s = settings(tmp_path, unhealthy_after=0.5)
    broker = FakeBroker(failures=10**6)
    async with (
        serve_gateway(s, TOOLS, broker_factory=lambda _store: broker, wait=False) as running,
        httpx.AsyncClient(base_url=running.url) as http,  # both probes are unauthenticated
    ):
        await answers(http, "/readyz", 503)
        health = await answers(http, "/healthz", 503)
        assert health.json()["stuck"] == {
            "consumer": "ConnectionError: RabbitMQ connection lost: refused"
        }
        readiness = (await http.get("/readyz")).json()
        assert readiness["checks"]["consumer"] == health.json()["stuck"]["consumer"]
        assert readiness["checks"]["database"] == "ok"
        broker.failures = 0  # the broker is back: the supervisor reconnects
        ready = (await answers(http, "/readyz", 200)).json()
        assert ready == {
            "ready": True,
            "checks": {"database": "ok", "consumer": "ok", "timeouts": "ok"},
        }
        assert (await http.get("/healthz")).status_code == 200


async def answers(http: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    """Poll ``path`` until it answers ``status`` (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            response = await http.get(path)
            if response.status_code == status:
                return response
            await asyncio.sleep(0.05)


async def test_a_slow_body_gets_408_within_the_timeout(fake: Any) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(
            b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        await writer.drain()

        async def trickle() -> None:
            for _ in range(100):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        try:
            async with asyncio.timeout(5):
                status = await reader.readline()
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
        finally:
            trickling.cancel()
            await asyncio.wait([trickling])
    finally:
        writer.close()
    took = time.monotonic() - started
    assert status.startswith(b"HTTP/1.1 408"), status
    assert "application/json" in head
    assert 0.9 < took < 3.0


async def test_arguments_nested_too_deep_are_refused_naming_the_limit(fake: Any) -> None:
    async with httpx.AsyncClient(base_url=fake.url, headers=AUTH, timeout=30) as http:
        at_limit = await http.post(
            "/jobs", json={"tool": "echo", "arguments": nested(MAX_JSON_DEPTH)}
        )
        assert at_limit.status_code == 201, at_limit.text
        for depth in (MAX_JSON_DEPTH + 1, 300, 5000):
            body = '{"tool": "echo", "arguments": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
            refused = await http.post(
                "/jobs", content=body, headers={"content-type": "application/json"}
            )
            assert refused.status_code == 422, (depth, refused.text)
            assert f"the limit is {MAX_JSON_DEPTH}" in refused.json()["detail"]
            assert f"arguments nest {depth} levels deep" in refused.json()["detail"]
        params = '{"name": "echo", "arguments": ' + "[" * 300 + "]" * 300 + "}"
        raw = '{"jsonrpc": "2.0", "method": "tools/call", "params": ' + params + ', "id": 7}'
        answer = await http.post(
            "/mcp",
            content=raw,
            headers={
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
            },
        )
        assert answer.status_code == 200
        error = answer.json()
        assert error["id"] == 7
        assert error["error"]["code"] == -32602
        assert f"the limit is {MAX_JSON_DEPTH}" in error["error"]["message"]
    async with mcp_client(fake.url) as mcp:
        with pytest.raises(MCPError) as info:
            await mcp.call_tool("echo", nested(200))
    assert info.value.code == -32602
    assert "200 levels deep" in info.value.message


async def test_a_stored_input_deeper_than_the_limit_is_still_served(fake: Any) -> None:
    deep = nested(300)  # stored before the limit existed, say
    owner = principals([TOKEN])[TOKEN].name
    job, _ = await fake.app.gateway.store.create("echo", deep, 60, principal=owner)
    async with httpx.AsyncClient(base_url=fake.url, headers=AUTH, timeout=30) as http:
        got = await http.get(f"/jobs/{job.id}")
        listed = await http.get("/jobs")
    assert got.status_code == 200
    assert got.json()["input"] == deep
    assert listed.status_code == 200


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_messages_that_cannot_be_applied_are_dead_lettered(
    gateway: Any, amqp_url: str, amqp_names: AmqpNames
) -> None:
    s = gateway.settings
    foreign = {"id": "f1", "route": {"steps": ["x"], "current": 1}, "payload": {"ok": 1}}
    unknown = {**foreign, "id": "u1", "headers": {JOB_HEADER: str(uuid.uuid4())}}
    bodies = {
        "foreign": json.dumps(foreign).encode(),
        "unknown": json.dumps(unknown).encode(),
        "undecodable": b"\x00 not an envelope",
        "deep": b'{"route": {"steps": ["x"]}, "payload": ' + b"[" * 200 + b"]" * 200 + b"}",
    }
    dead_end = dead_letter_queue(s.happy_end)
    dead_events = dead_letter_queue(s.events_queue)
    amqp_names.queues.extend([dead_end, dead_events])  # deleted at the end
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for queue in (dead_end, dead_events):  # as the gateway declares them: durable
            await channel.queue_declare(queue, durable=True)
        for name, body in bodies.items():
            await channel.basic_publish(
                body,
                exchange=s.exchange,
                routing_key=s.happy_end,
                properties=aiormq.spec.Basic.Properties(delivery_mode=2, message_id=name),
            )
        await channel.basic_publish(
            b"{not an event", exchange=s.events_exchange, routing_key="a.started"
        )
        got = await take(channel, dead_end, len(bodies))
        events = await take(channel, dead_events, 1)
        left = await channel.queue_declare(s.happy_end, passive=True)
    finally:
        await connection.close()
    by_name = {m.header.properties.message_id: m for m in got}
    assert set(by_name) == set(bodies)
    for name, message in by_name.items():
        assert message.body == bodies[name]  # unchanged
        assert message.header.properties.headers[SOURCE_HEADER] == s.happy_end
    reasons = {name: m.header.properties.headers[REASON_HEADER] for name, m in by_name.items()}
    assert "no asya-job-id header" in reasons["foreign"]
    assert "unknown job id" in reasons["unknown"]
    assert reasons["undecodable"].startswith("undecodable")
    assert "the limit is" in reasons["deep"]
    assert events[0].header.properties.headers[REASON_HEADER].startswith("undecodable")
    assert left.message_count == 0  # every one settled, none requeued in a loop


async def test_a_batch_of_step_events_of_two_jobs_is_applied_to_each_and_acked_once(
    gateway: Any, amqp_url: str, amqp_names: AmqpNames
) -> None:
    """A sidecar's batch (``ASYA_EVENTS_BATCH_WINDOW``: one message, a JSON array) may hold
    events of several jobs, and of none: each job gets its own, the message is acked once."""
    s = gateway.settings
    store = gateway.app.gateway.store
    jobs = [(await store.create("classify_text", {"text": "x"}, 60))[0] for _ in range(2)]
    steps = ("a", "b", "c")

    def event(job_id: str | None, current: int, message: str | None = None) -> bytes:
        headers = {JOB_HEADER: job_id} if job_id else {}
        return encode_event(
            StepEvent(
                type=EventType.DONE,
                actor=steps[current],
                time=time.time(),
                id=f"m-{job_id}",
                steps=steps,
                current=current,
                headers=headers,
                message=message,
            )
        )

    first, second = jobs[0].id, jobs[1].id
    dead_events = dead_letter_queue(s.events_queue)
    amqp_names.queues.append(dead_events)  # deleted at the end
    body = encode_event_batch(
        [event(first, 0), event(None, 0), event(second, 0), event(first, 1, "halfway")]
    )
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_declare(dead_events, durable=True)  # as the gateway declares it
        await channel.basic_publish(body, exchange=s.events_exchange, routing_key="a.batch")
        async with asyncio.timeout(20):
            while True:
                got = [await store.get(j.id) for j in jobs]
                if got[0].progress == pytest.approx(2 / 3) and got[1].progress:
                    break
                await asyncio.sleep(0.05)
        left = await channel.queue_declare(s.events_queue, passive=True)
        dead = await channel.queue_declare(dead_events, passive=True)
    finally:
        await connection.close()
    assert got[1].progress == pytest.approx(1 / 3)
    assert got[0].message == "halfway"
    assert left.message_count == 0
    assert dead.message_count == 0


async def take(channel: Any, queue: str, count: int) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(20):
        while len(got) < count:
            message = await channel.basic_get(queue, no_ack=True)
            if message.delivery_tag is not None:
                got.append(message)
            else:
                await asyncio.sleep(0.05)
    return got


async def test_an_events_queue_an_older_gateway_declared_classic_is_used_with_a_warning(
    gateway_settings: GatewaySettings,
    tools: Any,
    serve_gateway: Any,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After an upgrade the events queue exists as a classic queue; the broker refuses to
    declare it a quorum queue (406). The gateway must still consume it and be ready."""
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(gateway_settings.events_queue, durable=True)  # classic
    finally:
        await connection.close()
    async with (
        serve_gateway(gateway_settings, tools) as running,
        httpx.AsyncClient(base_url=running.url) as http,
    ):
        ready = await answers(http, "/readyz", 200)
        assert ready.json()["checks"]["consumer"] == "ok"
    assert any("exists with other arguments" in r.getMessage() for r in caplog.records)
