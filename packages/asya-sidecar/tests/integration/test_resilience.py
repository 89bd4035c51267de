"""Nothing is lost: kill -9 of a sidecar or a runtime, broker connection cuts, poison messages.

Count conservation: every message put in comes out in happy-end or error-end; duplicates are
allowed only after a crash, and carry the same id.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from asya_sidecar import amqp_sidecar
from asya_testing import AmqpClient, AmqpNames
from asya_testing.processes import short_socket_path, sidecar_process
from asya_testing.proxy import TcpProxy


def sidecar_env(url: str, names: AmqpNames, socket_path: str, **extra: str) -> dict[str, str]:
    return {
        "ASYA_RABBITMQ_URL": url,
        "ASYA_RABBITMQ_EXCHANGE": names.exchange,
        "ASYA_SOCKET_PATH": socket_path,
        "ASYA_HAPPY_END_QUEUE": names.happy_end,
        "ASYA_ERROR_END_QUEUE": names.error_end,
        "ASYA_EVENTS_EXCHANGE": names.events_exchange,
        "ASYA_RUNTIME_WAIT": "20",
        **extra,
    }


async def publish_many(client: AmqpClient, queue: str, count: int, **payload: Any) -> set[str]:
    ids = set()
    for i in range(count):
        ids.add(f"m-{i}")
        await client.publish(
            queue, {"id": f"m-{i}", "route": {"steps": [queue]}, "payload": {"i": i, **payload}}
        )
    return ids


async def wait_for_depth(client: AmqpClient, queue: str, at_least: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await client.depth(queue) < at_least:  # noqa: ASYNC110 - polls the broker
            await asyncio.sleep(0.05)


async def collect_ids(
    client: AmqpClient, names: AmqpNames, expected: set[str], timeout: float
) -> dict[str, list[dict[str, Any]]]:
    """Read both terminal queues until every expected id has arrived somewhere."""
    seen: dict[str, list[dict[str, Any]]] = {}
    async with asyncio.timeout(timeout):
        while not expected <= seen.keys():
            for queue in (names.happy_end, names.error_end):
                for message in await client.drain(queue):
                    seen.setdefault(message["id"], []).append(message)
            await asyncio.sleep(0.05)
    return seen


def assert_conserved(
    seen: dict[str, list[dict[str, Any]]], expected: set[str], happy: bool = True
) -> None:
    assert seen.keys() == expected, (
        f"missing {expected - seen.keys()}, extra {seen.keys() - expected}"
    )
    for mid, copies in seen.items():
        assert all(c["id"] == mid for c in copies)
        if happy:
            assert all("error" not in c["payload"] for c in copies), copies


async def test_kill_9_sidecar_mid_stream(
    amqp_url: str, amqp_names: AmqpNames, runtimes: Any, tmp_path: Path
) -> None:
    _, path = runtimes("slow", env={"ASYA_RUNTIME_CONCURRENCY": "4"})
    queue = amqp_names.queue("work")
    env = sidecar_env(amqp_url, amqp_names, path, ASYA_CONCURRENCY="4")
    async with AmqpClient(amqp_url, amqp_names) as client:
        await client.declare(queue, amqp_names.happy_end, amqp_names.error_end)
        expected = await publish_many(client, queue, 120, seconds=0.02)
        with sidecar_process(queue, env=env, log_dir=tmp_path) as first:
            await wait_for_depth(client, amqp_names.happy_end, 20, timeout=60)
            first.kill()  # SIGKILL: no ack for what was in flight
        assert 0 < await client.depth(queue) < 120
        with sidecar_process(queue, env=env, log_dir=tmp_path) as second:
            seen = await collect_ids(client, amqp_names, expected, timeout=90)
            assert second.alive(), second.log()
    assert_conserved(seen, expected)


async def test_kill_9_runtime_mid_request(
    amqp_url: str,
    amqp_names: AmqpNames,
    runtimes: Any,
    supervisor: Any,
    run_sidecars: Any,
    sidecar_settings: Any,
) -> None:
    path = short_socket_path()
    queue = amqp_names.queue("work")
    with supervisor(
        runtimes, "pipeline_handlers:slow", path, {"ASYA_RUNTIME_CONCURRENCY": "2"}
    ) as sup:
        settings = sidecar_settings(queue, path, concurrency=2)
        sidecar = amqp_sidecar(settings)
        async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars([sidecar]):
            expected = await publish_many(client, queue, 60, seconds=0.03)
            await wait_for_depth(client, amqp_names.happy_end, 10, timeout=60)
            assert sup.current is not None
            sup.current.kill()
            seen = await collect_ids(client, amqp_names, expected, timeout=120)
        assert sup.restarts >= 1
    assert_conserved(seen, expected)


async def test_broker_connection_cut(
    amqp_url: str,
    amqp_names: AmqpNames,
    runtimes: Any,
    run_sidecars: Any,
    sidecar_settings: Any,
) -> None:
    _, path = runtimes("slow", env={"ASYA_RUNTIME_CONCURRENCY": "4"})
    queue = amqp_names.queue("work")
    parts = urlsplit(amqp_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
        via_proxy = urlunsplit(parts._replace(netloc=netloc))
        settings = sidecar_settings(queue, path, concurrency=4, rabbitmq_url=via_proxy)
        sidecar = amqp_sidecar(settings)
        async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars([sidecar]):
            expected = await publish_many(client, queue, 120, seconds=0.02)
            for cut in range(2):
                await wait_for_depth(client, amqp_names.happy_end, 15 * (cut + 1), timeout=60)
                proxy.cut()
                await asyncio.sleep(0.3)  # let the sidecar notice and reconnect (bounded backoff)
            seen = await collect_ids(client, amqp_names, expected, timeout=120)
        assert proxy.cuts == 2
    assert_conserved(seen, expected)


async def test_poison_message_hits_the_redelivery_limit(
    amqp_url: str,
    amqp_names: AmqpNames,
    runtimes: Any,
    supervisor: Any,
    run_sidecars: Any,
    sidecar_settings: Any,
) -> None:
    path = short_socket_path()
    queue = amqp_names.queue("work")
    with supervisor(runtimes, "pipeline_handlers:crash_on_poison", path, {}) as sup:
        settings = sidecar_settings(queue, path, redelivery_limit=2)
        sidecar = amqp_sidecar(settings)
        async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars([sidecar]):
            await client.publish(
                queue, {"id": "poison", "route": {"steps": [queue]}, "payload": {"poison": True}}
            )
            await client.publish(
                queue, {"id": "fine", "route": {"steps": [queue]}, "payload": {"ok": 1}}
            )
            [err] = await client.take(amqp_names.error_end, 1, timeout=120)
            [ok] = await client.take(amqp_names.happy_end, 1, timeout=60)
    assert err["id"] == "poison"
    assert err["payload"]["error"] == "redelivery_limit"
    assert err["payload"]["attempts"] == 3
    assert err["payload"]["original_payload"] == {"poison": True}
    assert ok["id"] == "fine"
    assert sup.restarts == 3  # crashed once per delivery: first, and two redeliveries


async def test_sigterm_finishes_in_flight_and_leaves_the_rest(
    amqp_url: str, amqp_names: AmqpNames, runtimes: Any, tmp_path: Path
) -> None:
    _, path = runtimes("slow", env={"ASYA_RUNTIME_CONCURRENCY": "2"})
    queue = amqp_names.queue("work")
    env = sidecar_env(amqp_url, amqp_names, path, ASYA_CONCURRENCY="2")
    async with AmqpClient(amqp_url, amqp_names) as client:
        await client.declare(queue, amqp_names.happy_end, amqp_names.error_end)
        expected = await publish_many(client, queue, 10, seconds=0.5)
        with sidecar_process(queue, env=env, log_dir=tmp_path) as proc:
            await wait_for_depth(client, amqp_names.happy_end, 1, timeout=60)
            proc.signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, proc.log()
        done = await client.drain(amqp_names.happy_end)
        left = await client.depth(queue)
    assert "stopping: no new deliveries" in proc.log()
    assert len({d["id"] for d in done}) == len(done)  # graceful: no duplicates
    assert len(done) + left == len(expected)
    assert left > 0
