"""What only real RabbitMQ and real processes show: kill -9 of a sidecar process, broker
connection cuts (reconnect within the 2 s backoff ceiling, the control queue bound again),
SIGTERM of a sidecar process; both processes on either event loop (ASYA_EVENT_LOOP).
Redelivery after a runtime crash is in behaviour/test_redelivery.py, on both transports."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from asya_protocol import (
    JOB_HEADER,
    RECONNECT_MAX_DELAY,
    JobControl,
    JobControlType,
    encode_job_control,
)
from asya_sidecar import amqp_sidecar
from asya_testing import AmqpNames
from asya_testing.processes import sidecar_process
from asya_testing.proxy import TcpProxy


def sidecar_env(url: str, names: AmqpNames, socket_path: str, **extra: str) -> dict[str, str]:
    return {
        "ASYA_RABBITMQ_URL": url,
        "ASYA_RABBITMQ_EXCHANGE": names.exchange,
        "ASYA_SOCKET_PATH": socket_path,
        "ASYA_HAPPY_END_QUEUE": names.happy_end,
        "ASYA_ERROR_END_QUEUE": names.error_end,
        "ASYA_EVENTS_EXCHANGE": names.events_exchange,
        "ASYA_CONTROL_EXCHANGE": names.control_exchange,
        "ASYA_RUNTIME_WAIT": "20",
        **extra,
    }


async def queued_work(
    bus: Any, runtimes: Any, flow: Any, *, concurrency: int, count: int, seconds: float
) -> tuple[str, dict[str, str], set[str]]:
    """A slow runtime, the environment of a sidecar process for it, and ``count`` messages
    already on its queue: (queue, environment, their ids)."""
    _, path = runtimes("slow", env={"ASYA_RUNTIME_CONCURRENCY": str(concurrency)})
    queue = bus.queue("work")
    env = sidecar_env(bus.url, bus.names, path, ASYA_CONCURRENCY=str(concurrency))
    await bus.declare(queue, bus.happy_end, bus.error_end)
    return queue, env, await flow.publish_many(bus, queue, count, seconds=seconds)


async def test_kill_9_sidecar_mid_stream(
    amqp_bus: Any, runtimes: Any, tmp_path: Path, flow: Any
) -> None:
    bus = amqp_bus
    queue, env, expected = await queued_work(
        bus, runtimes, flow, concurrency=4, count=120, seconds=0.02
    )
    with sidecar_process(queue, env=env, log_dir=tmp_path) as first:
        await flow.wait_for_depth(bus, bus.happy_end, 20, timeout=60)
        first.kill()  # SIGKILL: no ack for what was in flight
    assert 0 < await bus.depth(queue) < 120
    with sidecar_process(queue, env=env, log_dir=tmp_path) as second:
        seen = await flow.collect_ids(bus, expected, timeout=90)
        assert second.alive(), second.log()
    flow.assert_conserved(seen, expected)


async def test_broker_connection_cut(
    amqp_bus: Any, runtimes: Any, run_sidecars: Any, sidecar_settings: Any, flow: Any
) -> None:
    """Two cuts lose nothing, and each time the sidecar consumes again within the reconnect
    ceiling (plus the time a connection takes) of the broker answering again."""
    _, path = runtimes("slow", env={"ASYA_RUNTIME_CONCURRENCY": "4"})
    bus = amqp_bus
    queue = bus.queue("work")
    parts = urlsplit(bus.url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
        via_proxy = urlunsplit(parts._replace(netloc=netloc))
        settings = sidecar_settings(queue, path, concurrency=4, rabbitmq_url=via_proxy)
        sidecar = amqp_sidecar(settings)
        async with run_sidecars([sidecar]):
            expected = await flow.publish_many(bus, queue, 120, seconds=0.02)
            for cut in range(2):
                await flow.wait_for_depth(bus, bus.happy_end, 15 * (cut + 1), timeout=60)
                proxy.cut()
                cut_at = time.monotonic()
                async with asyncio.timeout(10):
                    while sidecar.consuming.is_set():  # noqa: ASYNC110 - no event for "lost"
                        await asyncio.sleep(0.01)
                    await sidecar.consuming.wait()
                assert time.monotonic() - cut_at < RECONNECT_MAX_DELAY + 3.0
            seen = await flow.collect_ids(bus, expected, timeout=120)
        assert proxy.cuts == 2
    flow.assert_conserved(seen, expected)


async def test_sigterm_finishes_in_flight_and_leaves_the_rest(
    amqp_bus: Any, runtimes: Any, tmp_path: Path, flow: Any
) -> None:
    bus = amqp_bus
    queue, env, expected = await queued_work(
        bus, runtimes, flow, concurrency=2, count=10, seconds=0.5
    )
    with sidecar_process(queue, env=env, log_dir=tmp_path) as proc:
        await flow.wait_for_depth(bus, bus.happy_end, 1, timeout=60)
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.log()
    done = await bus.drain(bus.happy_end)
    left = await bus.depth(queue)
    assert "stopping: no new deliveries" in proc.log()
    assert len({d["id"] for d in done}) == len(done)  # graceful: no duplicates
    assert len(done) + left == len(expected)
    assert left > 0


async def test_after_a_reconnect_the_control_queue_is_declared_again(
    amqp_bus: Any, runtimes: Any, run_sidecars: Any, sidecar_settings: Any
) -> None:
    """The exclusive control queue goes with the connection; the next session binds a new one
    before it consumes, so a cancel sent after the reconnect is heard."""
    _, path = runtimes("echo")
    bus = amqp_bus
    queue = bus.queue("work")
    parts = urlsplit(bus.url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
        via_proxy = urlunsplit(parts._replace(netloc=netloc))
        sidecar = amqp_sidecar(sidecar_settings(queue, path, rabbitmq_url=via_proxy))
        async with run_sidecars([sidecar]):
            first = sidecar.transport
            assert first is not None
            assert first.control_listening
            first_queue = getattr(first, "control_queue", None)
            proxy.cut()
            async with asyncio.timeout(10):
                reconnected = False
                while not reconnected:
                    await asyncio.sleep(0.01)
                    reconnected = sidecar.transport is not first and sidecar.consuming.is_set()
            second = sidecar.transport
            assert second is not None
            assert second.control_listening
            assert getattr(second, "control_queue", None) not in (None, first_queue)
            body = JobControl(type=JobControlType.CANCEL, job_id="job-x", time=time.time())
            await bus.client.publish_control(encode_job_control(body))
            async with asyncio.timeout(10):
                while "job-x" not in sidecar.cancelled:  # noqa: ASYNC110 - a broker delivery
                    await asyncio.sleep(0.01)
            for mid, job in (("x", "job-x"), ("y", "job-y")):
                envelope = {"id": mid, "route": {"steps": [queue]}, "payload": 1}
                await bus.publish(queue, {**envelope, "headers": {JOB_HEADER: job}})
            [done] = await bus.take(bus.happy_end, 1, timeout=30)
        assert done["id"] == "y"
        assert proxy.cuts == 1


def uses_uvloop(pid: int) -> bool:
    """Whether uvloop's compiled loop is loaded in process ``pid``."""
    return "/uvloop/loop." in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(
    ("sidecar_loop", "runtime_loop"), [("uvloop", "asyncio"), ("asyncio", "uvloop")]
)
async def test_both_processes_on_either_loop(
    amqp_bus: Any, runtimes: Any, tmp_path: Path, flow: Any, sidecar_loop: str, runtime_loop: str
) -> None:
    bus = amqp_bus
    runtime, path = runtimes(
        "slow", env={"ASYA_RUNTIME_CONCURRENCY": "4", "ASYA_EVENT_LOOP": runtime_loop}
    )
    queue = bus.queue("loops")
    env = sidecar_env(bus.url, bus.names, path, ASYA_CONCURRENCY="4", ASYA_EVENT_LOOP=sidecar_loop)
    await bus.declare(queue, bus.happy_end, bus.error_end)
    expected = await flow.publish_many(bus, queue, 40)
    with sidecar_process(queue, env=env, log_dir=tmp_path) as sidecar:
        seen = await flow.collect_ids(bus, expected, timeout=60)
        assert sidecar.alive(), sidecar.log()
        assert uses_uvloop(sidecar.pid) is (sidecar_loop == "uvloop")
        assert uses_uvloop(runtime.pid) is (runtime_loop == "uvloop")
    flow.assert_conserved(seen, expected)
