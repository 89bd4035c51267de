"""Dynamic micro-batching, on both transports, with real asya-runtime processes serving a
``@batch`` handler: each message its own result, error, fan-out and ack. A runtime killed
mid-batch loses nothing: see test_redelivery.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asya_protocol import child_id


def sizes(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


async def test_fifty_messages_in_batches(
    bus: Any, runtimes: Any, run_sidecars: Any, flow: Any, tmp_path: Path
) -> None:
    log = tmp_path / "batches.log"
    _, path = runtimes("batch_double", env={"BATCH_LOG": str(log), "BATCH_SLEEP": "0.02"})
    queue = bus.queue("embed")
    sidecar = bus.sidecar(queue, path, concurrency=2)
    async with run_sidecars([sidecar]):
        assert sidecar.batch is not None
        assert (sidecar.batch.max_size, sidecar.batch.max_wait) == (8, 0.05)
        assert sidecar.prefetch == 16
        expected = await flow.publish_many(bus, queue, 50)
        seen = await flow.collect_ids(bus, expected, timeout=60)
        metrics = sidecar.metrics.render().decode()
    flow.assert_conserved(seen, expected)
    for mid, [message] in seen.items():
        i = int(mid.removeprefix("m-"))
        assert message["payload"] == {"i": i, "double": 2 * i}
        assert message["route"]["current"] == 1
    batches = sizes(log)
    assert sum(batches) == 50
    assert max(batches) > 1, batches
    assert max(batches) <= 8
    assert 'asya_sidecar_batch_size_count{actor="' in metrics
    assert 'asya_sidecar_messages_total{actor="' in metrics


async def test_errors_and_fan_out_per_item(
    bus: Any, runtimes: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    log = tmp_path / "batches.log"
    _, path = runtimes("batch_double", env={"BATCH_LOG": str(log)})
    queue = bus.queue("embed")
    payloads = [{"i": 0}, {"i": 1, "bad": True}, {"i": 2, "split": True}, {"i": 3}]
    async with run_sidecars([bus.sidecar(queue, path)]):
        for n, payload in enumerate(payloads):
            await bus.publish(
                queue, {"id": f"b-{n}", "route": {"steps": [queue]}, "payload": payload}
            )
        [failed] = await bus.take(bus.error_end, 1, timeout=30)
        done = await bus.take(bus.happy_end, 4, timeout=30)
    assert failed["id"] == "b-1"
    assert failed["payload"]["error"] == "bad_item"
    assert failed["payload"]["original_payload"] == {"i": 1, "bad": True}
    by_id = {m["id"]: m for m in done}
    assert by_id["b-0"]["payload"] == {"i": 0, "double": 0}
    assert by_id["b-3"]["payload"] == {"i": 3, "double": 6}
    children = [by_id[child_id("b-2", n)] for n in range(2)]
    assert [c["payload"] for c in children] == [{"i": 2, "part": 0}, {"i": 2, "part": 1}]
    assert {c["parent_id"] for c in children} == {"b-2"}
    assert max(sizes(log)) > 1  # published together, gathered together


async def test_whole_batch_failures_reach_every_item(
    bus: Any, runtimes: Any, run_sidecars: Any
) -> None:
    """A raising batch handler fails each item of the batch; a result list of the wrong length
    is a protocol_error for each item."""
    _, crashing = runtimes("batch_double")
    _, short = runtimes("batch_short")
    crash_q, short_q = bus.queue("crash"), bus.queue("short")
    async with run_sidecars([bus.sidecar(crash_q, crashing), bus.sidecar(short_q, short)]):
        for n in range(3):
            await bus.publish(
                crash_q, {"id": f"c-{n}", "route": {"steps": [crash_q]}, "payload": {"crash": True}}
            )
            await bus.publish(
                short_q, {"id": f"s-{n}", "route": {"steps": [short_q]}, "payload": n}
            )
        errors = await bus.take(bus.error_end, 6, timeout=30)
    by_id = {e["id"]: e["payload"] for e in errors}
    assert sorted(by_id) == ["c-0", "c-1", "c-2", "s-0", "s-1", "s-2"]
    for n in range(3):
        assert by_id[f"c-{n}"]["error"] == "handler_error"
        assert "the model crashed" in by_id[f"c-{n}"]["message"]
        assert by_id[f"c-{n}"]["original_payload"] == {"crash": True}
        assert by_id[f"s-{n}"]["error"] == "protocol_error"
        assert by_id[f"s-{n}"]["original_payload"] == n


async def test_a_sidecar_cap_of_one_turns_batching_off(
    bus: Any, runtimes: Any, run_sidecars: Any, flow: Any, tmp_path: Path
) -> None:
    log = tmp_path / "batches.log"
    _, path = runtimes("batch_double", env={"BATCH_LOG": str(log)})
    queue = bus.queue("embed")
    sidecar = bus.sidecar(queue, path, concurrency=2, batch_max_size=1)
    async with run_sidecars([sidecar]):
        assert sidecar.batch is None
        expected = await flow.publish_many(bus, queue, 10)
        seen = await flow.collect_ids(bus, expected, timeout=30)
    flow.assert_conserved(seen, expected)
    assert sizes(log) == [1] * 10


async def test_a_partial_batch_is_flushed_at_the_maximum_wait(
    bus: Any, runtimes: Any, run_sidecars: Any, flow: Any, tmp_path: Path
) -> None:
    """Three messages for batches of eight: the sidecar does not wait for five more, it sends
    what it has once the maximum wait (0.05 s) has passed."""
    log = tmp_path / "batches.log"
    _, path = runtimes("batch_double", env={"BATCH_LOG": str(log)})
    queue = bus.queue("embed")
    sidecar = bus.sidecar(queue, path, concurrency=1)
    async with run_sidecars([sidecar]):
        assert sidecar.batch is not None
        assert sidecar.batch.max_size == 8
        expected = await flow.publish_many(bus, queue, 3)
        seen = await flow.collect_ids(bus, expected, timeout=30)
    flow.assert_conserved(seen, expected)
    batches = sizes(log)
    assert sum(batches) == 3
    assert max(batches) < 8, batches  # flushed partial, never a full batch


async def test_a_runtime_without_the_batch_extension_is_served_one_by_one(
    bus: Any, runtimes: Any, run_sidecars: Any, flow: Any
) -> None:
    """The sidecar is configured to batch, but the runtime's handler is not a ``@batch``
    handler, so it does not agree to the extension: every message goes alone, as a payload."""
    _, path = runtimes("echo")
    queue = bus.queue("plain")
    sidecar = bus.sidecar(queue, path, concurrency=2, batch_max_size=8, batch_max_wait=0.05)
    async with run_sidecars([sidecar]):
        assert sidecar.batch is None
        expected = await flow.publish_many(bus, queue, 10)
        seen = await flow.collect_ids(bus, expected, timeout=30)
    flow.assert_conserved(seen, expected)
    for mid, [message] in seen.items():
        assert message["payload"] == {"i": int(mid.removeprefix("m-"))}
