"""Partial results of a streaming handler, on both transports: ``partial`` step events of a
job's message, in order, before its result, which is routed unchanged; the rate bound
(coalescing) and the size bound (the marker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from asya_protocol import (
    JOB_HEADER,
    EventType,
    StepEvent,
    encode_error,
    encode_frame,
    encode_ok,
    encode_partial,
    is_control_frame,
    read_frame,
)
from asya_testing.processes import short_socket_path

HANDLER = "streaming_handlers:words"
TEXT = "one two three four five six seven eight nine ten"


def envelope(bus: Any, mid: str, payload: dict[str, Any], *, job: bool = True) -> dict[str, Any]:
    headers = {JOB_HEADER: f"job-{mid}", "traceparent": "00-1-2-01"} if job else {}
    return {
        "id": mid,
        "route": {"steps": [bus.queue("stream")]},
        "payload": payload,
        "headers": headers,
        "x-keep": True,
    }


def partials_of(events: list[StepEvent], mid: str) -> list[StepEvent]:
    return [e for e in events if e.type is EventType.PARTIAL and e.id == mid]


def chunks(events: list[StepEvent]) -> list[Any]:
    return [c for e in events for c in e.chunks]


async def test_partials_arrive_in_order_and_the_result_is_unchanged(
    bus: Any, make_sidecars: Any, run_sidecars: Any, watch_events: Any
) -> None:
    [sidecar] = make_sidecars([("stream", HANDLER)], partial_interval=0.0)
    async with watch_events(bus) as events, run_sidecars([sidecar]):
        await bus.publish(bus.queue("stream"), envelope(bus, "s-1", {"text": TEXT}))
        await bus.publish(bus.queue("stream"), envelope(bus, "s-2", {"text": "a b"}, job=False))
        done = await bus.take(bus.happy_end, 2, timeout=30)
        seen = await events()
    by_id = {d["id"]: d for d in done}
    assert by_id["s-1"]["payload"] == {"text": TEXT.upper()}
    assert by_id["s-1"]["route"]["current"] == 1
    assert by_id["s-1"]["headers"][JOB_HEADER] == "job-s-1"
    assert by_id["s-1"]["x-keep"] is True
    partial = partials_of(seen, "s-1")
    assert chunks(partial) == TEXT.split()
    offsets = [e.offset for e in partial]
    assert offsets == [sum(len(e.chunks) for e in partial[:i]) for i in range(len(partial))]
    assert all(
        e.actor == bus.queue("stream") and e.headers[JOB_HEADER] == "job-s-1" for e in partial
    )
    # Published before the step's result: before its done event too.
    kinds = [e.type for e in seen if e.id == "s-1"]
    assert kinds.index(EventType.DONE) > max(
        i for i, k in enumerate(kinds) if k is EventType.PARTIAL
    )
    # A message that is not a job's: its partial results go nowhere, its result as usual.
    assert partials_of(seen, "s-2") == []
    assert by_id["s-2"]["payload"] == {"text": "A B"}


async def test_partials_within_the_interval_become_one_event(
    bus: Any, make_sidecars: Any, run_sidecars: Any, watch_events: Any
) -> None:
    """With an interval longer than the step, the first partial result goes out at once and
    every later one waits for the end of the exchange: at most two events, nothing reordered."""
    [sidecar] = make_sidecars([("stream", HANDLER)], partial_interval=60.0)
    async with watch_events(bus) as events, run_sidecars([sidecar]):
        await bus.publish(bus.queue("stream"), envelope(bus, "c-1", {"text": TEXT}))
        [done] = await bus.take(bus.happy_end, 1, timeout=30)
        partial = partials_of(await events(), "c-1")
    assert done["payload"] == {"text": TEXT.upper()}
    assert 1 <= len(partial) <= 2
    assert chunks(partial) == TEXT.split()


@pytest.mark.parametrize("big", [100, 4000])
async def test_an_oversized_partial_is_replaced_by_a_marker(
    bus: Any, make_sidecars: Any, run_sidecars: Any, watch_events: Any, big: int
) -> None:
    [sidecar] = make_sidecars([("stream", HANDLER)], partial_max_bytes=64, partial_interval=0.0)
    async with watch_events(bus) as events, run_sidecars([sidecar]):
        await bus.publish(bus.queue("stream"), envelope(bus, "o-1", {"text": "a b", "big": big}))
        [done] = await bus.take(bus.happy_end, 1, timeout=30)
        partial = partials_of(await events(), "o-1")
    assert done["payload"] == {"text": "A B"}
    marker = {"asya_dropped": {"reason": "too_large", "bytes": big + 2, "limit": 64}}
    assert chunks(partial) == ["a", "b", marker, "after"]
    # No event carries more than the bound of chunk bytes.
    assert all(
        sum(len(json.dumps(c, separators=(",", ":"))) for c in e.chunks) <= 64 for e in partial
    )


@asynccontextmanager
async def unasked_partial_runtime(path: str) -> AsyncIterator[None]:
    """A base-protocol runtime (it answers control frames with parse_error) that sends a
    partial result anyway before each reply: it broke the protocol."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while (frame := await read_frame(reader)) is not None:
                if is_control_frame(frame):
                    writer.write(encode_frame(encode_error("parse_error", "not JSON")))
                else:
                    writer.write(encode_frame(encode_partial("unasked")))
                    writer.write(encode_frame(encode_ok(json.loads(frame))))
                await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_a_partial_result_without_negotiation_is_a_protocol_error(
    bus: Any, run_sidecars: Any
) -> None:
    path = short_socket_path()
    q = bus.queue("unasked")
    sidecar = bus.sidecar(q, path)
    async with unasked_partial_runtime(path), run_sidecars([sidecar]):
        await bus.publish(q, {"id": "u-1", "route": {"steps": [q]}, "payload": {"n": 1}})
        [failed] = await bus.take(bus.error_end, 1, timeout=30)
    assert failed["id"] == "u-1"
    assert failed["payload"]["error"] == "protocol_error"
    assert "did not negotiate 'partial'" in failed["payload"]["message"]
