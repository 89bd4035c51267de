"""Handlers that outlive the sidecar's ASYA_RUNTIME_TIMEOUT wedge nothing and lose nothing: an
async one is cancelled and its slot freed; a ``def`` one makes the runtime not ready (the
sidecar's /readyz fails and it sends no work) until the runtime exits 70 and is restarted."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from asya_testing.processes import short_socket_path, wait_until


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def readyz_until(port: int, wanted: int, *, timeout: float) -> tuple[float, str]:
    """Poll /readyz until it answers ``wanted``: (seconds it took, the body)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            status, body = await asyncio.to_thread(get, port, "/readyz")
            if status == wanted:
                return time.monotonic() - started, body
            await asyncio.sleep(0.05)


async def test_abandoned_async_handlers_are_cancelled_and_wedge_nothing(
    bus: Any, runtimes: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    """Runtime concurrency 2, sidecar timeout 0.5 s: seven handlers that never return each
    end in error-end with ``timeout`` and are cancelled in the runtime (their ``finally``
    runs), so the fast messages after them still succeed."""
    marks = tmp_path / "marks"
    marks.mkdir()
    _, path = runtimes(
        "forever_or_fast", env={"ASYA_RUNTIME_CONCURRENCY": "2", "TEST_STATE_DIR": str(marks)}
    )
    q = bus.queue("forever")
    sidecar = bus.sidecar(q, path, concurrency=2, runtime_timeout=0.5)
    stuck = [f"stuck-{i}" for i in range(2 + 5)]
    fast = [f"fast-{i}" for i in range(3)]
    async with run_sidecars([sidecar]):
        for i, mid in enumerate(stuck):
            await bus.publish(q, {"id": mid, "route": {"steps": [q]}, "payload": {"i": i}})
        for i, mid in enumerate(fast):
            await bus.publish(q, {"id": mid, "route": {"steps": [q]}, "payload": {"fast": i}})
        failed = await bus.take(bus.error_end, len(stuck), timeout=30)
        done = await bus.take(bus.happy_end, len(fast), timeout=30)
        assert await bus.drain(bus.error_end) == []
    assert sorted(m["id"] for m in failed) == sorted(stuck)
    assert {m["payload"]["error"] for m in failed} == {"timeout"}
    assert sorted(m["id"] for m in done) == fast
    assert sorted(m["payload"] for m in done) == [0, 1, 2]
    # The runtime sees each abandoned connection a moment after the sidecar published.
    wait_until(lambda: len(list(marks.iterdir())) == len(stuck), timeout=5, what="cancelled")
    assert sorted(p.name for p in marks.iterdir()) == [str(i) for i in range(len(stuck))]


async def test_a_stuck_sync_handler_restarts_the_runtime_and_loses_nothing(
    bus: Any, runtimes: Any, run_sidecars: Any, supervisor: Any
) -> None:
    """A ``def`` handler in ``time.sleep`` past the 0.5 s timeout: its message ends in
    error-end with ``timeout``; the runtime reports not ready, so /readyz fails and the fast
    messages wait; past ASYA_HANDLER_STUCK_EXIT it exits 70, is restarted, /readyz is 200
    again and every fast message ends in happy-end."""
    env = {
        "ASYA_RUNTIME_CONCURRENCY": "1",
        "ASYA_RUNTIME_TIMEOUT": "0.5",
        "ASYA_HANDLER_STUCK_EXIT": "1.5",
    }
    q = bus.queue("stuck")
    with supervisor(runtimes, "stuck_or_fast", short_socket_path(), env) as runtime:
        first = runtime.current
        sidecar = bus.sidecar(q, runtime.socket_path, runtime_timeout=0.5, http_port=0)
        async with run_sidecars([sidecar]):
            port = sidecar.http_port
            assert port
            assert await asyncio.to_thread(get, port, "/readyz") == (200, "ready\n")
            await bus.publish(q, {"id": "stuck", "route": {"steps": [q]}, "payload": {}})
            not_ready_after, body = await readyz_until(port, 503, timeout=10)
            for i in range(3):
                await bus.publish(
                    q, {"id": f"fast-{i}", "route": {"steps": [q]}, "payload": {"fast": i}}
                )
            ready_after, _ = await readyz_until(port, 200, timeout=30)
            [failed] = await bus.take(bus.error_end, 1, timeout=30)
            done = await bus.take(bus.happy_end, 3, timeout=30)
            assert await bus.drain(bus.error_end) == []
        assert first is not None
        assert first.wait(timeout=10) == 70
        assert runtime.restarts == 1
    assert body.startswith("runtime: not ready: 1 of 1 slot(s) held by a handler running past")
    assert not_ready_after < 2.0, not_ready_after
    assert 1.5 < ready_after < 15.0, ready_after
    assert (failed["id"], failed["payload"]["error"]) == ("stuck", "timeout")
    assert sorted(m["id"] for m in done) == ["fast-0", "fast-1", "fast-2"]
    assert "handler stuck: " in first.log()
