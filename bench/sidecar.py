"""One actor's throughput and per-hop latency: asya-sidecar against a raw aiormq loop.

Run: ``hatch run bench:sidecar`` with ``ASYA_TEST_AMQP_URL`` (or ``--amqp-url``) pointing at
RabbitMQ. Both contenders run as their own process against the same broker, with the same message
size, and move messages from an input queue to an output queue:

- raw: aiormq consume -> publish to the output queue (publisher confirm awaited) -> ack;
- asya: asya-sidecar with an asya-runtime process serving a trivial handler (``async def`` by
  default; ``--handler def``: a ``def`` handler, served by the runtime's connection threads).

Throughput: N messages are queued first, then the consumer starts; the figure is N over the time
until the output queue has them all. Latency: one message at a time, from publish until this
harness's consumer of the output queue receives it.
Ratios asya/raw are printed for concurrency 1 and 16.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import aiormq
from pamqp import commands as spec

RAW_LOOP = textwrap.dedent(
    """
    import asyncio, sys, aiormq
    from pamqp import commands as spec
    url, exchange, source, target, prefetch = sys.argv[1:6]
    async def main():
        conn = await aiormq.connect(url)
        consume = await conn.channel()
        publish = await conn.channel(publisher_confirms=True)
        await consume.basic_qos(prefetch_count=int(prefetch))
        async def on_message(message):
            await publish.basic_publish(
                message.body, exchange=exchange, routing_key=target,
                properties=spec.Basic.Properties(delivery_mode=2), mandatory=True)
            await consume.basic_ack(message.delivery_tag)
        await consume.basic_consume(source, on_message)
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)

HANDLERS = {
    "async": "async def echo(payload):\n    return payload\n",
    "def": "def echo(payload):\n    return payload\n",
}


def payload(size: int) -> dict[str, object]:
    return {"text": "x" * size}


class Broker:
    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange = exchange

    async def __aenter__(self) -> Broker:
        self.connection = await aiormq.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def declare(self, *queues: str) -> None:
        for q in queues:
            await self.channel.queue_declare(q, durable=True)
            await self.channel.queue_bind(q, self.exchange, routing_key=q)

    async def delete(self, *queues: str) -> None:
        for q in queues:
            await self.channel.queue_delete(q)

    async def publish(self, queue: str, body: bytes) -> None:
        await self.channel.basic_publish(
            body,
            exchange=self.exchange,
            routing_key=queue,
            properties=spec.Basic.Properties(delivery_mode=2),
        )

    async def depth(self, queue: str) -> int:
        ok = await self.channel.queue_declare(queue, passive=True)
        return int(ok.message_count)


def envelope(queue: str, size: int) -> bytes:
    return json.dumps({"route": {"steps": [queue]}, "payload": payload(size)}).encode()


@contextmanager
def contender(
    kind: str, url: str, exchange: str, source: str, target: str, concurrency: int, workdir: str
) -> Iterator[None]:
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    try:
        if kind == "raw":
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        RAW_LOOP,
                        url,
                        exchange,
                        source,
                        target,
                        str(concurrency),
                    ]
                )
            )
        else:
            sock = os.path.join(workdir, f"{source}.sock")
            renv = env | {
                "ASYA_HANDLER": "bench_handler:echo",
                "ASYA_SOCKET_PATH": sock,
                "PYTHONPATH": workdir,
                "ASYA_LOG_LEVEL": "WARNING",
                "ASYA_RUNTIME_CONCURRENCY": str(concurrency),
            }
            procs.append(subprocess.Popen([sys.executable, "-m", "asya_runtime"], env=renv))
            senv = env | {
                "ASYA_ACTOR_NAME": source,
                "ASYA_RABBITMQ_URL": url,
                "ASYA_RABBITMQ_EXCHANGE": exchange,
                "ASYA_SOCKET_PATH": sock,
                "ASYA_HAPPY_END_QUEUE": target,
                "ASYA_ERROR_END_QUEUE": target + "-err",
                "ASYA_CONCURRENCY": str(concurrency),
                "ASYA_HTTP_PORT": "off",
                "ASYA_EVENTS_EXCHANGE": "",
                "ASYA_LOG_LEVEL": "WARNING",
            }
            procs.append(subprocess.Popen([sys.executable, "-m", "asya_sidecar"], env=senv))
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


async def wait_depth(broker: Broker, queue: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await broker.depth(queue) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue}: fewer than {count} messages after {timeout}s")
        await asyncio.sleep(0.005)


async def latencies(
    broker: Broker, source: str, target: str, body: bytes, samples: int
) -> list[float]:
    """Seconds from publish to arrival in ``target`` (consumed as it comes: no polling), one
    message at a time."""
    channel = await broker.connection.channel()
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        arrived.put_nowait(time.perf_counter())

    await channel.basic_consume(target, on_message, no_ack=True)
    out = []
    try:
        for _ in range(samples):
            t0 = time.perf_counter()
            confirm = asyncio.ensure_future(broker.publish(source, body))
            out.append(await asyncio.wait_for(arrived.get(), timeout=60) - t0)
            await confirm
    finally:
        await channel.close()
    return out


async def measure(
    kind: str, args: argparse.Namespace, concurrency: int
) -> tuple[float, float, float]:
    tag = uuid.uuid4().hex[:8]
    exchange, source, target = f"bench-{tag}", f"bench-in-{tag}", f"bench-out-{tag}"
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as workdir:
        with open(os.path.join(workdir, "bench_handler.py"), "w") as f:  # noqa: ASYNC230
            f.write(HANDLERS[args.handler])
        async with Broker(args.amqp_url, exchange) as broker:
            await broker.declare(source, target, target + "-err")
            try:
                body = envelope(source, args.size)
                for _ in range(args.messages):
                    await broker.publish(source, body)
                with contender(kind, args.amqp_url, exchange, source, target, concurrency, workdir):
                    started = time.perf_counter()
                    await wait_depth(broker, target, args.messages, timeout=600)
                    rate = args.messages / (time.perf_counter() - started)
                    await broker.channel.queue_purge(target)
                    samples = await latencies(broker, source, target, body, args.latency_samples)
                q = statistics.quantiles(samples, n=100)
                return rate, q[49] * 1000, q[98] * 1000
            finally:
                await broker.delete(source, target, target + "-err")
                await broker.channel.exchange_delete(exchange)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--amqp-url", default=os.environ.get("ASYA_TEST_AMQP_URL"))
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--size", type=int, default=1024, help="payload text bytes")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument(
        "--handler",
        choices=sorted(HANDLERS),
        default="async",
        help="the trivial handler's kind",
    )
    args = parser.parse_args()
    if not args.amqp_url:
        raise SystemExit(
            'set ASYA_TEST_AMQP_URL or pass --amqp-url (eval "$(bash .ci/services.sh)")'
        )
    for concurrency in (1, 16):
        raw = await measure("raw", args, concurrency)
        asya = await measure("asya", args, concurrency)
        for name, (rate, p50, p99) in (("raw", raw), ("asya", asya)):
            print(
                f"c={concurrency:<2} {name:>4}: {rate:8.0f} msg/s  "
                f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms",
                flush=True,
            )
        print(
            f"c={concurrency:<2} asya/raw: throughput {asya[0] / raw[0]:.2f}x, "
            f"p50 {asya[1] / raw[1]:.2f}x, p99 {asya[2] / raw[2]:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
