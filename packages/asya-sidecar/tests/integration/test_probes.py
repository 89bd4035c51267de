"""/healthz, /readyz and /metrics over real HTTP."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

from asya_sidecar import Sidecar, amqp_sidecar
from asya_testing import AmqpClient, AmqpNames


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_probes_and_metrics(
    amqp_url: str, amqp_names: AmqpNames, runtimes: Any, run_sidecars: Any, sidecar_settings: Any
) -> None:
    proc, path = runtimes("echo")
    queue = amqp_names.queue("echo")
    settings = sidecar_settings(queue, path, http_port=0)
    sidecar: Sidecar = amqp_sidecar(settings)
    async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars([sidecar]):
        port = sidecar.http_port
        assert port
        assert await asyncio.to_thread(get, port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, port, "/readyz") == (200, "ready\n")
        assert (await asyncio.to_thread(get, port, "/nope"))[0] == 404
        await client.publish(queue, {"route": {"steps": [queue]}, "payload": {"x": 1}})
        await client.publish(queue, b"junk")
        await client.take(amqp_names.happy_end, 1, timeout=30)
        await client.take(amqp_names.error_end, 1, timeout=30)
        # A result reaches its queue before the sidecar acks the input and counts it as settled.
        wanted = [
            f'asya_sidecar_messages_total{{actor="{queue}",outcome="happy_end"}} 1.0',
            f'asya_sidecar_messages_total{{actor="{queue}",outcome="error_end"}} 1.0',
        ]
        for _ in range(100):
            status, metrics = await asyncio.to_thread(get, port, "/metrics")
            assert status == 200
            if all(line in metrics for line in wanted):
                break
            await asyncio.sleep(0.05)
        for line in wanted:
            assert line in metrics
        assert "asya_sidecar_processing_seconds_bucket" in metrics
        assert f'asya_sidecar_in_flight{{actor="{queue}"}} 0.0' in metrics
        proc.kill()
        status, body = await asyncio.to_thread(get, port, "/readyz")
        assert (status, body) == (503, "runtime: not answering\n")
