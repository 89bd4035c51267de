"""Runtimes that break the socket protocol's framing: a reply over the frame limit, a final
frame too many. Each message ends once, under its own id; no result is ever delivered for
another message."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from asya_protocol import encode_error, encode_frame, encode_ok, is_control_frame, read_frame
from asya_testing.processes import short_socket_path


async def test_a_reply_over_the_frame_limit_ends_once_as_frame_too_large(
    bus: Any, make_sidecars: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    """The handler runs once; its result (over the sidecar's ASYA_MAX_FRAME_SIZE, under the
    runtime's) goes to error-end as frame_too_large, and the runtime keeps serving."""
    [sidecar] = make_sidecars(
        [("big", "big_result")],
        max_frame_size=4096,
        redelivery_limit=2,
        runtime_env={"TEST_STATE_DIR": str(tmp_path)},
    )
    q = bus.queue("big")
    async with run_sidecars([sidecar]):
        for key, size in (("big-1", 10_000), ("small-1", 10)):
            await bus.publish(
                q, {"id": key, "route": {"steps": [q]}, "payload": {"key": key, "size": size}}
            )
        [fine] = await bus.take(bus.happy_end, 1, timeout=30)
        [failed] = await bus.take(bus.error_end, 1, timeout=30)
        assert await bus.drain(bus.error_end) == []
        assert await bus.depth(q) == 0
    assert fine["id"] == "small-1"
    assert failed["id"] == "big-1"
    assert failed["payload"]["error"] == "frame_too_large"
    assert failed["payload"]["original_payload"] == {"key": "big-1", "size": 10_000}
    assert failed["payload"]["details"]["limit"] == 4096
    assert failed["payload"]["details"]["size"] > 10_000
    assert "ASYA_MAX_FRAME_SIZE" in failed["payload"]["message"]
    assert (tmp_path / "big-1").read_text() == "x"  # one run, not redelivery_limit + 1
    assert sidecar.metrics.redeliveries._value.get() == 0


@asynccontextmanager
async def double_replying_runtime(path: str) -> AsyncIterator[list[Any]]:
    """A base-protocol runtime that echoes each payload, but answers twice when the payload
    asks: ``{"twice": "together"}`` sends both final frames in one write, ``"apart"`` in two.
    Yields the payloads it received."""
    received: list[Any] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while (frame := await read_frame(reader)) is not None:
                if is_control_frame(frame):  # a base runtime: control frames are not JSON
                    writer.write(encode_frame(encode_error("parse_error", "not JSON")))
                    await writer.drain()
                    continue
                payload = json.loads(frame)
                received.append(payload)
                reply = encode_frame(encode_ok(payload))
                extra = encode_frame(encode_ok({"extra": payload}))
                match payload.get("twice"):
                    case "together":
                        writer.write(reply + extra)
                    case "apart":
                        writer.write(reply)
                        await writer.drain()
                        writer.write(extra)
                    case _:
                        writer.write(reply)
                await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path)
    try:
        yield received
    finally:
        server.close()
        await server.wait_closed()


async def test_a_runtime_that_replies_twice_never_shifts_results(
    bus: Any, run_sidecars: Any
) -> None:
    """Two final frames for one request once shifted every later result on that connection by
    one (message 2 got message 1's result under its own id). Now the message whose reply came
    with an extra frame ends as protocol_error, the connection is dropped, and every other
    message gets its own result."""
    path = short_socket_path()
    q = bus.queue("twice")
    sidecar = bus.sidecar(q, path, redelivery_limit=2)

    def envelope(key: str, **payload: Any) -> dict[str, Any]:
        return {"id": key, "route": {"steps": [q]}, "payload": {"key": key, **payload}}

    async with (
        double_replying_runtime(path) as received,
        run_sidecars([sidecar]),
    ):
        await bus.publish(q, envelope("m-1", twice="together"))
        for n in (2, 3):
            await bus.publish(q, envelope(f"m-{n}"))
        await bus.publish(q, envelope("m-4", twice="apart"))
        for n in (5, 6):
            await bus.publish(q, envelope(f"m-{n}"))
        # m-1 certainly fails; m-4's extra frame is caught with its reply or, if it comes
        # later, on the idle connection before m-5 is sent (then m-4's own result stands).
        done = await bus.take(bus.happy_end, 4, timeout=30)
        done += await bus.drain(bus.happy_end)
        for message in done:  # every result under its own id, never another message's
            assert message["payload"].get("key") == message["id"], message
        failed = await bus.take(bus.error_end, 1, timeout=30)
        failed += await bus.drain(bus.error_end)
        assert await bus.depth(q) == 0
    assert {m["id"] for m in done} >= {"m-2", "m-3", "m-5", "m-6"}
    assert [f["payload"]["error"] for f in failed] == ["protocol_error"] * len(failed)
    assert "m-1" in {f["id"] for f in failed}
    assert sorted([m["id"] for m in done] + [f["id"] for f in failed]) == [
        f"m-{n}" for n in range(1, 7)
    ]
    m1 = next(f for f in failed if f["id"] == "m-1")
    assert m1["payload"]["original_payload"] == {"key": "m-1", "twice": "together"}
    assert "two final frames" in m1["payload"]["message"]
    assert [p["key"] for p in received] == [f"m-{n}" for n in range(1, 7)]  # each ran once
