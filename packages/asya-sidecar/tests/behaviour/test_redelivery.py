"""Redelivery, on both transports: a runtime killed mid-request (or mid-batch) loses nothing,
and a message that kills its runtime every time ends in error-end after the redelivery limit."""

from __future__ import annotations

from typing import Any

import pytest

from asya_testing.processes import short_socket_path


@pytest.mark.parametrize(
    ("handler", "env", "payload"),
    [
        ("slow", {"ASYA_RUNTIME_CONCURRENCY": "2"}, {"seconds": 0.03}),
        ("batch_double", {"BATCH_SLEEP": "0.05"}, {}),  # a batch handler, killed mid-batch
    ],
)
async def test_kill_9_runtime_mid_request(
    bus: Any,
    runtimes: Any,
    supervisor: Any,
    run_sidecars: Any,
    flow: Any,
    handler: str,
    env: dict[str, str],
    payload: dict[str, Any],
) -> None:
    path = short_socket_path()
    queue = bus.queue("work")
    with supervisor(runtimes, f"pipeline_handlers:{handler}", path, env) as sup:
        sidecar = bus.sidecar(queue, path, concurrency=2)
        async with run_sidecars([sidecar]):
            expected = await flow.publish_many(bus, queue, 60, **payload)
            await flow.wait_for_depth(bus, bus.happy_end, 10, timeout=60)
            assert sup.current is not None
            sup.current.kill()
            seen = await flow.collect_ids(bus, expected, timeout=120)
        assert sup.restarts >= 1
    flow.assert_conserved(seen, expected)


async def test_poison_message_hits_the_redelivery_limit(
    bus: Any, runtimes: Any, supervisor: Any, run_sidecars: Any
) -> None:
    path = short_socket_path()
    queue = bus.queue("work")
    with supervisor(runtimes, "pipeline_handlers:crash_on_poison", path, {}) as sup:
        sidecar = bus.sidecar(queue, path, redelivery_limit=2)
        async with run_sidecars([sidecar]):
            await bus.publish(
                queue, {"id": "poison", "route": {"steps": [queue]}, "payload": {"poison": True}}
            )
            await bus.publish(
                queue, {"id": "fine", "route": {"steps": [queue]}, "payload": {"ok": 1}}
            )
            [err] = await bus.take(bus.error_end, 1, timeout=120)
            [ok] = await bus.take(bus.happy_end, 1, timeout=60)
    assert err["id"] == "poison"
    assert err["payload"]["error"] == "redelivery_limit"
    assert err["payload"]["attempts"] == 3
    assert err["payload"]["original_payload"] == {"poison": True}
    assert ok["id"] == "fine"
    assert sup.restarts == 3  # crashed once per delivery: first, and two redeliveries
