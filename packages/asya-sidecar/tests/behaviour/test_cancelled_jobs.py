"""Cancelled jobs, on both transports: the gateway announces a cancelled job on the control
exchange; the sidecar skips the job's messages it has not started (acked, never sent to the
runtime, nothing published) and abandons the ones in flight (an ``async def`` handler is
cancelled in the runtime, its slot freed; a ``def`` handler runs to its end, its result dropped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asya_protocol import JOB_HEADER, JobControl, JobControlType, encode_job_control
from asya_sidecar import Sidecar


def cancel(job_id: str) -> bytes:
    return encode_job_control(
        JobControl(type=JobControlType.CANCEL, job_id=job_id, time=time.time())
    )


def message(mid: str, steps: list[str], payload: Any, job: str | None = None) -> dict[str, Any]:
    envelope: dict[str, Any] = {"id": mid, "route": {"steps": steps}, "payload": payload}
    if job is not None:
        envelope["headers"] = {JOB_HEADER: job}
    return envelope


async def eventually(check: Callable[[], bool], *, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - a file another process writes, or a metric
            await asyncio.sleep(0.02)


def cancelled_count(sidecar: Sidecar) -> float:
    value = sidecar.metrics.registry.get_sample_value(
        "asya_sidecar_messages_total",
        {"actor": sidecar.settings.actor, "outcome": "cancelled"},
    )
    return value or 0.0


async def test_a_cancelled_jobs_messages_are_skipped_and_other_jobs_flow(
    bus: Any, runtimes: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    """The cancelled job's message would wait forever in the runtime (and, at concurrency 1,
    hold up the rest): it is acked without reaching it, nothing goes to its next step; the
    messages of another job, and of none, go on."""
    marks = tmp_path / "marks"
    marks.mkdir()
    _, path = runtimes("cancellable_or_fast", env={"TEST_STATE_DIR": str(marks)})
    q, nxt = bus.queue("cancel"), bus.queue("next")
    await bus.declare(nxt)
    sidecar = bus.sidecar(q, path)
    async with run_sidecars([sidecar]):
        assert sidecar.transport is not None
        assert sidecar.transport.control_listening
        await bus.control(cancel("job-x"))
        await eventually(lambda: "job-x" in sidecar.cancelled, timeout=10)
        await bus.publish(q, message("x", [q, nxt], {"i": 0}, job="job-x"))
        await bus.publish(q, message("y", [q], {"fast": 1}, job="job-y"))
        await bus.publish(q, message("z", [q], {"fast": 2}))
        done = await bus.take(bus.happy_end, 2, timeout=30)
        assert cancelled_count(sidecar) == 1
        assert await bus.drain(nxt) == []
        assert await bus.drain(bus.error_end) == []
    assert sorted((m["id"], m["payload"]) for m in done) == [("y", 1), ("z", 2)]
    assert list(marks.iterdir()) == []  # the runtime never saw it
    assert await bus.depth(q) == 0  # acked: not given back when the sidecar stopped


async def test_an_in_flight_async_handler_is_cancelled_and_its_slot_freed(
    bus: Any, runtimes: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    """An ``async def`` handler waiting forever (runtime and sidecar concurrency 1, the
    default 300 s timeout) is cancelled in the runtime when its job's cancel arrives; nothing
    is published for it and the next message is served at once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    _, path = runtimes(
        "cancellable_or_fast",
        env={"TEST_STATE_DIR": str(marks), "ASYA_RUNTIME_CONCURRENCY": "1"},
    )
    q, nxt = bus.queue("cancel"), bus.queue("next")
    await bus.declare(nxt)
    sidecar = bus.sidecar(q, path)
    async with run_sidecars([sidecar]):
        await bus.publish(q, message("x", [q, nxt], {"i": 0}, job="job-x"))
        await eventually((marks / "started-0").exists, timeout=20)
        await bus.control(cancel("job-x"))
        await eventually((marks / "cancelled-0").exists, timeout=5)
        started = time.monotonic()
        await bus.publish(q, message("y", [q], {"fast": 7}, job="job-y"))
        [done] = await bus.take(bus.happy_end, 1, timeout=10)
        served_in = time.monotonic() - started
        assert cancelled_count(sidecar) == 1
        assert await bus.drain(nxt) == []
        assert await bus.drain(bus.error_end) == []
    assert (done["id"], done["payload"]) == ("y", 7)
    assert served_in < 5, served_in
    assert await bus.depth(q) == 0


async def test_an_in_flight_sync_handler_runs_to_its_end_and_its_result_is_dropped(
    bus: Any, runtimes: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    """A ``def`` handler's thread cannot be interrupted: it ends in the runtime, holding its
    slot until then (the next message starts after it), and its result is not published."""
    marks = tmp_path / "marks"
    marks.mkdir()
    _, path = runtimes(
        "sleepy", env={"TEST_STATE_DIR": str(marks), "ASYA_RUNTIME_CONCURRENCY": "1"}
    )
    q, nxt = bus.queue("cancel"), bus.queue("next")
    await bus.declare(nxt)
    sidecar = bus.sidecar(q, path)
    async with run_sidecars([sidecar]):
        await bus.publish(q, message("x", [q, nxt], {"i": 0, "sleep": 1.0}, job="job-x"))
        await eventually((marks / "started-0").exists, timeout=20)
        await bus.control(cancel("job-x"))
        await eventually(lambda: cancelled_count(sidecar) == 1, timeout=5)
        await bus.publish(q, message("y", [q], {"i": 1}, job="job-y"))
        [done] = await bus.take(bus.happy_end, 1, timeout=20)
        assert await bus.drain(nxt) == []
        assert await bus.drain(bus.error_end) == []
    assert done["id"] == "y"
    assert (marks / "ended-0").exists()
    assert (marks / "ended-0").stat().st_mtime <= (marks / "started-1").stat().st_mtime
    assert await bus.depth(q) == 0


async def test_malformed_control_messages_are_ignored(
    bus: Any, runtimes: Any, run_sidecars: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asya_sidecar")
    _, path = runtimes("echo")
    q = bus.queue("cancel")
    sidecar = bus.sidecar(q, path)
    bad = [
        b"not json",
        b'{"type": "cancel", "job_id": "", "time": 1}',
        b'{"type": "explode", "job_id": "j", "time": 1}',
        b"\xff\xfe",
    ]
    async with run_sidecars([sidecar]):
        for body in bad:
            await bus.control(body)
        await bus.control(cancel("job-v"))  # after the bad ones on the same queue
        await eventually(lambda: "job-v" in sidecar.cancelled, timeout=10)
        await bus.publish(q, message("v", [q], {"n": 1}, job="job-v"))
        await bus.publish(q, message("w", [q], {"n": 2}, job="job-w"))
        [done] = await bus.take(bus.happy_end, 1, timeout=30)
    assert done["id"] == "w"
    assert len(sidecar.cancelled) == 1
    ignored = [r for r in caplog.records if r.getMessage().startswith("control message ignored")]
    assert len(ignored) == len(bad), [r.getMessage() for r in ignored]


async def test_an_empty_control_exchange_means_no_control_queue(
    bus: Any, runtimes: Any, run_sidecars: Any
) -> None:
    _, path = runtimes("echo")
    q = bus.queue("cancel")
    sidecar = bus.sidecar(q, path, control_exchange="")
    async with run_sidecars([sidecar]):
        transport = sidecar.transport
        assert transport is not None
        assert not transport.control_listening
        assert getattr(transport, "control_queue", None) is None
        if bus.kind == "memory":
            assert bus.broker.control_listeners == []
        await bus.control(cancel("job-x"))
        await bus.publish(q, message("x", [q], {"n": 1}, job="job-x"))
        [done] = await bus.take(bus.happy_end, 1, timeout=30)
    assert done["id"] == "x"
    assert "job-x" not in sidecar.cancelled


async def test_a_batch_whose_members_are_all_cancelled_is_abandoned(
    bus: Any, runtimes: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    _, path = runtimes(
        "batch_wait", env={"TEST_STATE_DIR": str(marks), "ASYA_RUNTIME_CONCURRENCY": "1"}
    )
    q = bus.queue("embed")
    await bus.declare(q)
    for i in range(2):  # waiting before the sidecar starts: one batch
        await bus.publish(q, message(f"x{i}", [q], {"i": i, "wait": True}, job="job-x"))
    sidecar = bus.sidecar(q, path)
    async with run_sidecars([sidecar]):
        assert sidecar.batch is not None
        await eventually((marks / "batch-2").exists, timeout=20)
        await bus.control(cancel("job-x"))
        await eventually((marks / "cancelled").exists, timeout=5)
        await bus.publish(q, message("y", [q], {"i": 5}))
        [done] = await bus.take(bus.happy_end, 1, timeout=10)
        assert cancelled_count(sidecar) == 2
        assert await bus.drain(bus.error_end) == []
    assert (done["id"], done["payload"]) == ("y", {"i": 5, "double": 10})
    assert await bus.depth(q) == 0


async def test_in_a_mixed_batch_only_the_cancelled_jobs_results_are_dropped(
    bus: Any, runtimes: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    _, path = runtimes("batch_wait", env={"TEST_STATE_DIR": str(marks)})
    q, nxt = bus.queue("embed"), bus.queue("next")
    await bus.declare(q, nxt)
    await bus.publish(q, message("x", [q, nxt], {"i": 0, "sleep": 1.0}, job="job-x"))
    await bus.publish(q, message("y", [q], {"i": 1}, job="job-y"))
    sidecar = bus.sidecar(q, path)
    async with run_sidecars([sidecar]):
        await eventually((marks / "batch-2").exists, timeout=20)
        await bus.control(cancel("job-x"))
        [done] = await bus.take(bus.happy_end, 1, timeout=20)
        await eventually(lambda: cancelled_count(sidecar) == 1, timeout=5)
        assert await bus.drain(nxt) == []
        assert await bus.drain(bus.error_end) == []
    assert (done["id"], done["payload"]) == ("y", {"i": 1, "double": 2})
    assert await bus.depth(q) == 0
