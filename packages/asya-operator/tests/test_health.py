"""Health checks, the probe answers and server, and supervised tasks that never end silently."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asya_operator.controller import Controller
from asya_operator.health import Check, Health, describe
from asya_operator.kubeclient import kube_error
from asya_operator.probes import ProbeServer, answer
from asya_operator.queues import QueueManager
from asya_operator.supervise import supervise
from asya_protocol import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FORBIDDEN = kube_error(
    403, "Forbidden", {"message": 'asyas.asya.sh is forbidden: User "x" cannot list resource'}
)


def test_not_ready_before_a_check_first_passes_and_while_one_fails() -> None:
    health = Health()
    watch = health.check("asyas")
    assert health.readiness() == (False, {"asyas": "starting"})
    watch.passed()
    assert health.readiness() == (True, {"asyas": "ok"})
    watch.failed(FORBIDDEN)
    ready, checks = health.readiness()
    assert not ready
    assert checks["asyas"].startswith("Forbidden: asyas.asya.sh is forbidden")
    assert health.check("asyas") is watch


def test_unhealthy_only_after_failing_for_longer_than_the_limit() -> None:
    clock = Clock()
    health = Health(unhealthy_after=2.0, clock=clock)
    watch = health.check("asyas")
    assert health.liveness() == (True, {})  # starting is not failing
    watch.failed(FORBIDDEN)
    clock.now += 1.5
    watch.failed(FORBIDDEN)  # the run of failures keeps its start
    assert health.liveness()[0]
    clock.now += 1.0
    live, failing = health.liveness()
    assert not live
    assert "Forbidden" in failing["asyas"]
    assert "failing for 2s" in failing["asyas"]
    watch.passed()
    assert health.liveness() == (True, {})


def test_describe() -> None:
    assert describe(RuntimeError("boom")) == "RuntimeError: boom"
    assert describe(RuntimeError()) == "RuntimeError"
    assert describe("ended") == "ended"


def test_answers() -> None:
    health = Health()
    health.check("asyas").failed(FORBIDDEN)
    status, body = answer(health, "GET", "/readyz")
    assert status == 503
    assert body["ready"] is False
    assert answer(health, "GET", "/healthz")[0] == 200
    assert answer(health, "POST", "/readyz")[0] == 405
    assert answer(health, "GET", "/metrics")[0] == 404
    health.check("asyas").passed()
    assert answer(health, "GET", "/readyz") == (200, {"ready": True, "checks": {"asyas": "ok"}})


async def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
async def probes() -> AsyncIterator[tuple[Health, int]]:
    health = Health()
    server = ProbeServer(health)
    port = await server.start("127.0.0.1", 0)
    try:
        yield health, port
    finally:
        await server.stop()


async def test_the_probe_server_answers_json(probes: tuple[Health, int]) -> None:
    health, port = probes
    health.check("asyas").failed(FORBIDDEN)
    status, body = await get(port, "/readyz?verbose")
    assert status == 503
    assert json.loads(body)["checks"]["asyas"].startswith("Forbidden: ")
    assert await get(port, "/readyz", "HEAD") == (503, b"")
    status, body = await get(port, "/healthz")
    assert (status, json.loads(body)) == (200, {"live": True, "failing": {}})


async def test_the_probe_server_serves_metrics(probes: tuple[Health, int]) -> None:
    _, port = probes
    status, body = await get(port, "/metrics")
    assert status == 200
    text = body.decode()
    assert 'asya_operator_reconciles_total{result="ok"} 0.0' in text
    assert "# TYPE asya_operator_reconcile_duration_seconds histogram" in text
    assert "asya_operator_workqueue_depth" in text


async def test_the_probe_server_drops_garbage(probes: tuple[Health, int]) -> None:
    _, port = probes
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x" * 20000)  # no end of head within the limit
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    assert (await get(port, "/healthz"))[0] == 200


FAST = {"initial": 0.01, "maximum": 0.02}


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not true in time"
        await asyncio.sleep(0.01)


async def test_a_task_that_raises_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    settled = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise RuntimeError(f"crash {len(runs)}")
        settled.set()
        await asyncio.Future()

    check = Check("workers")
    task = asyncio.create_task(supervise(check, flaky, settle=0.05, backoff=Backoff(**FAST)))
    try:
        await asyncio.wait_for(settled.wait(), 5)
        assert not check.passing
        assert check.error == "RuntimeError: crash 2"
        await _until(lambda: check.passing)  # survived ``settle``: recovered
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(runs) == 3
    crashes = [r for r in caplog.records if "task workers failed; restarting it" in r.message]
    assert len(crashes) == 2
    assert crashes[0].exc_info is not None
    assert crashes[0].exc_info[0] is RuntimeError


async def test_a_task_that_returns_is_restarted_and_crash_loops_stay_failing() -> None:
    clock = Clock()
    check = Check("resync", clock)

    async def returns() -> None:
        clock.now += 1.0

    task = asyncio.create_task(supervise(check, returns, settle=10, backoff=Backoff(**FAST)))
    try:
        await _until(lambda: clock.now > 1005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert check.error == "Ended: resync ended"
    assert check.failing_since == pytest.approx(1001.0)  # one run of failures since the first


class CrashingKube:
    """Lists fail with a bug (not an API error) the first time, then list one Asya."""

    def __init__(self) -> None:
        self.lists: dict[str, int] = {}

    async def list_objects(self, api_version: str, kind: str, namespace: Any, **_: Any) -> Any:
        self.lists[kind] = self.lists.get(kind, 0) + 1
        if kind == "Asya" and self.lists[kind] == 1:
            raise RuntimeError("a bug in the watch")
        items = [{"metadata": {"namespace": "ns", "name": "a"}}] if kind == "Asya" else []
        return {"items": items, "metadata": {"resourceVersion": "1"}}

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Future()  # a quiet watch
        yield {}


async def test_a_watch_that_raises_is_restarted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = CrashingKube()
    controller = Controller(kube, QueueManager("amqp://u:p@127.0.0.1:1/"), namespaces=("ns",))  # type: ignore[arg-type]
    seen: list[tuple[str, str]] = []

    async def record(namespace: str, name: str) -> None:
        seen.append((namespace, name))

    controller.work.handler = record
    stop = asyncio.Event()
    run = asyncio.create_task(controller.run(stop))
    try:
        await _until(lambda: seen == [("ns", "a")] or run.done())
        assert not run.done()
        await _until(lambda: controller.health.readiness()[0])
        assert controller.health.readiness()[1] == {
            "ns/asyas": "ok",
            "ns/deployments": "ok",
            "ns/jobs": "ok",
            "ns/statefulsets": "ok",
            "resync": "ok",
            "workers": "ok",
        }
    finally:
        stop.set()
        await asyncio.wait_for(run, 5)
    assert kube.lists["Asya"] == 2
    crash = next(r for r in caplog.records if "task ns/asyas failed" in r.message)
    assert crash.levelno == logging.ERROR
    assert "a bug in the watch" in str(crash.exc_info[1] if crash.exc_info else "")
