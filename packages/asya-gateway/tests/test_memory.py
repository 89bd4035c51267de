"""The in-process gateway broker (``asya dev``) on the sidecars' in-process broker and SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asya_gateway import JobStatus, MemoryBroker, PublishFailed, StartFailed
from asya_gateway.db import make_engine
from asya_gateway.jobs import JobStore
from asya_gateway.messages import JOB_HEADER
from asya_gateway.migrate import upgrade
from asya_gateway.notify import Notifier
from asya_gateway.service import Gateway
from asya_gateway.tools import parse_tools
from asya_protocol import (
    EventType,
    StepEvent,
    decode_envelope,
    encode_envelope,
    encode_event,
)
from asya_sidecar import MemoryBroker as InProcessBroker
from asya_sidecar import Unroutable

TOOLS = {"tools": [{"name": "echo", "steps": ["echo"]}, {"name": "nowhere", "steps": ["none"]}]}


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Gateway, InProcessBroker]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await upgrade(url)
    engine = make_engine(url)
    notifier = Notifier(url)
    queues = InProcessBroker()
    queues.declare("echo")
    store = JobStore(engine, notifier.notify)
    broker = MemoryBroker(
        queues, store, happy_end="happy-end", error_end="error-end", unroutable=(Unroutable,)
    )
    gateway = Gateway(
        tools=parse_tools(TOOLS, "test"),
        store=store,
        broker=broker,
        notifier=notifier,
        default_timeout=60,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            consumer = tg.create_task(broker.consume())
            await broker.connected.wait()
            yield gateway, queues
            consumer.cancel()
    finally:
        await broker.close()
        await engine.dispose()


async def test_a_job_through_the_in_process_broker(
    running: tuple[Gateway, InProcessBroker],
) -> None:
    gateway, queues = running
    job = (await gateway.start("echo", {"text": "hi"})).job
    assert job.job_status is JobStatus.RUNNING
    first = decode_envelope(await queues.get("echo", timeout=5))
    assert first.headers[JOB_HEADER] == job.id
    assert first.payload_value() == {"text": "hi"}
    # What a sidecar does: announce the step, then put the result in happy-end.
    started = StepEvent(
        type=EventType.STARTED,
        actor="echo",
        time=time.time(),
        id=first.id,
        steps=("echo",),
        current=0,
        headers=first.headers,
    )
    queues.emit_event("echo.started", encode_event(started))
    queues.emit_event("echo.started", b"not an event")  # dead-lettered
    await queues.publish("happy-end", b"not an envelope")  # dead-lettered, not dropped
    done = first.with_route(first.route.advance()).with_payload({"echoed": "hi"})
    await queues.publish("happy-end", encode_envelope(done))
    finished = await asyncio.wait_for(gateway.wait(job.id), 10)
    assert finished.job_status is JobStatus.SUCCEEDED
    assert await queues.get("happy-end.dead", timeout=5) == b"not an envelope"
    assert await queues.get("asya-gateway-events.dead", timeout=5) == b"not an event"
    assert finished.result == {"echoed": "hi"}
    kinds = [e.type async for e in gateway.events(job.id)]
    assert kinds[0] == "status"
    assert "branch" in kinds


async def test_no_actor_for_the_first_step_fails_the_start(
    running: tuple[Gateway, InProcessBroker],
) -> None:
    gateway, _ = running
    with pytest.raises(StartFailed) as info:
        await gateway.start("nowhere", {})
    assert info.value.job.job_status is JobStatus.FAILED
    assert info.value.job.error["error"] == "unroutable"
    assert isinstance(info.value.__cause__, PublishFailed)
    assert "no actor consumes the first step 'none'" in str(info.value)
