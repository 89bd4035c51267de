"""The in-process transport runs the same Sidecar code with real runtime processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from asya_sidecar import MemoryBroker, RetryPolicy, Sidecar, SidecarSettings
from asya_sidecar import memory_sidecar as make_memory_sidecar
from asya_testing.processes import runtime_process

HERE = str(Path(__file__).resolve().parent)
STEPS = ["preprocess", "inference", "postprocess"]


@pytest.fixture
def runtime_paths(tmp_path: Path) -> Iterator[Any]:
    with ExitStack() as stack:

        def start(handler: str, env: dict[str, str] | None = None) -> str:
            _, path = stack.enter_context(
                runtime_process(
                    f"pipeline_handlers:{handler}", python_path=[HERE], log_dir=tmp_path, env=env
                )
            )
            return path

        yield start


def memory_sidecar(broker: MemoryBroker, actor: str, path: str, **kw: Any) -> Sidecar:
    settings = SidecarSettings(actor=actor, socket_path=path, http_port=None, runtime_wait=20, **kw)
    return make_memory_sidecar(broker, settings)


async def run_all(sidecars: list[Sidecar], body: Any) -> None:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        for s in sidecars:
            tg.create_task(s.run(stop))
        try:
            for s in sidecars:
                async with asyncio.timeout(30):
                    await s.consuming.wait()
            await body()
        finally:
            stop.set()


async def test_seed_pipeline_in_process(runtime_paths: Any) -> None:
    broker = MemoryBroker()
    events: list[tuple[str, dict[str, Any]]] = []
    broker.event_listeners.append(lambda key, body: events.append((key, json.loads(body))))
    sidecars = [memory_sidecar(broker, s, runtime_paths(s)) for s in STEPS]
    result: list[dict[str, Any]] = []

    async def body() -> None:
        await broker.publish(
            "preprocess",
            json.dumps({"route": {"steps": STEPS}, "payload": {"text": "Hello world"}}).encode(),
        )
        result.append(json.loads(await broker.get("happy-end", timeout=30)))

    await run_all(sidecars, body)
    broker.close()
    assert result[0]["payload"] == {"result": "Classified as greeting"}
    assert result[0]["route"]["current"] == 3
    assert "inference.progress" in {k for k, _ in events}


async def test_retry_and_errors_in_process(runtime_paths: Any, tmp_path: Path) -> None:
    broker = MemoryBroker()
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0.0)
    flaky = memory_sidecar(
        broker, "flaky", runtime_paths("flaky", {"TEST_STATE_DIR": str(tmp_path)}), retry=policy
    )
    out: dict[str, Any] = {}

    async def body() -> None:
        for key, fails in (("a", 1), ("b", 3)):
            payload = {"key": key, "fail_times": fails}
            await broker.publish(
                "flaky", json.dumps({"route": {"steps": ["flaky"]}, "payload": payload}).encode()
            )
        await broker.publish("flaky", b"garbage")
        out["happy"] = json.loads(await broker.get("happy-end", timeout=30))
        out["errors"] = [json.loads(await broker.get("error-end", timeout=30)) for _ in range(2)]

    await run_all([flaky], body)
    broker.close()
    assert out["happy"]["payload"] == {"key": "a", "calls": 2}
    codes = sorted(e["payload"]["error"] for e in out["errors"])
    assert codes == ["model_busy", "parse_error"]


async def test_oversized_payload_goes_to_error_end(runtime_paths: Any) -> None:
    broker = MemoryBroker()
    sidecar = memory_sidecar(broker, "echo", runtime_paths("echo"), max_frame_size=2048)
    out: list[dict[str, Any]] = []

    async def body() -> None:
        big = {"route": {"steps": ["echo"]}, "payload": {"text": "x" * 5000}}
        await broker.publish("echo", json.dumps(big).encode())
        out.append(json.loads(await broker.get("error-end", timeout=30)))

    await run_all([sidecar], body)
    broker.close()
    assert out[0]["payload"]["error"] == "frame_too_large"
    assert out[0]["payload"]["original_payload"] == {"text": "x" * 5000}


async def test_exit_when_idle(runtime_paths: Any) -> None:
    broker = MemoryBroker()
    sidecar = memory_sidecar(broker, "echo", runtime_paths("echo"), exit_when_idle=0.3)
    stop = asyncio.Event()
    broker.declare("echo")
    await broker.publish("echo", json.dumps({"route": {"steps": ["echo"]}, "payload": 1}).encode())
    async with asyncio.timeout(30):
        await sidecar.run(stop)  # returns by itself once idle
    assert stop.is_set()
    assert json.loads(await broker.get("happy-end", timeout=1))["payload"] == 1
    broker.close()
