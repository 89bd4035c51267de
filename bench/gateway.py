"""The gateway under load, against raw aiormq hops measured in the same run.

Run: ``hatch run bench:gateway`` with ``ASYA_TEST_AMQP_URL`` and ``ASYA_TEST_DATABASE_URL`` set.

1. Tool calls per second through ``POST /jobs`` (the call returns at once), PostgreSQL behind:
   the gateway's own capacity, so the tool's first step has a queue but no actor consuming it
   (with actors running, the two cores are shared by every process of the pipeline).
2. p50/p99 latency of the seed's three-step pipeline end to end: gateway -> three sidecars and
   runtimes -> result seen by the client (over SSE). Baseline: the same three hops done by a raw
   aiormq loop (consume -> publish with confirm -> ack, three times) from publish to arrival.

Both also give the CPU time they cost the gateway process and PostgreSQL (every ``postgres``
process on the machine, which runs nothing else meanwhile), per call and per pipeline job: on
two cores, CPU is what a start and a followed job take from everything else.

Every component runs as its own process, as in production. The client is a minimal HTTP/1.1
client on keep-alive connections (:class:`Http`), so that what is measured is the gateway: on
these two cores httpx's own CPU per request would cap the rate near 400 requests/s against an
ASGI app that does nothing.
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiormq
from pamqp import commands as spec

from asya_testing import fresh_database
from asya_testing.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"  # noqa: S105 - a local benchmark credential
STEPS = ("preprocess", "inference", "postprocess")

RAW_HOPS = textwrap.dedent(
    """
    import asyncio, sys, aiormq
    from pamqp import commands as spec
    url, exchange, *queues = sys.argv[1:]
    async def main():
        conn = await aiormq.connect(url)
        pub = await conn.channel(publisher_confirms=True)
        for src, dst in zip(queues, queues[1:]):
            ch = await conn.channel()
            await ch.basic_qos(prefetch_count=16)
            def make(ch, dst):
                async def on_message(m):
                    await pub.basic_publish(m.body, exchange=exchange, routing_key=dst,
                        properties=spec.Basic.Properties(delivery_mode=2), mandatory=True)
                    await ch.basic_ack(m.delivery_tag)
                return on_message
            await ch.basic_consume(src, make(ch, dst))
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)


@contextmanager
def process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def declare(url: str, exchange: str, queues: list[str]) -> None:
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    await ch.exchange_declare(exchange, exchange_type="topic", durable=True)
    for q in queues:
        await ch.queue_declare(q, durable=True)
        await ch.queue_bind(q, exchange, routing_key=q)
    await conn.close()


async def delete(url: str, exchange: str, queues: list[str]) -> None:
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    for q in queues:
        await ch.queue_delete(q)
    await ch.exchange_delete(exchange)
    await conn.close()


async def raw_latency(url: str, tag: str, samples: int) -> list[float]:
    exchange = f"bench-raw-{tag}"
    queues = [f"bench-raw-{tag}-{i}" for i in range(4)]
    await declare(url, exchange, queues)
    try:
        with process([sys.executable, "-c", RAW_HOPS, url, exchange, *queues], dict(os.environ)):
            conn = await aiormq.connect(url)
            pub = await conn.channel(publisher_confirms=True)
            sub = await conn.channel()
            arrived: asyncio.Queue[float] = asyncio.Queue()

            async def on_message(m: aiormq.abc.DeliveredMessage) -> None:
                await sub.basic_ack(m.delivery_tag)
                arrived.put_nowait(time.perf_counter())

            await sub.basic_consume(queues[-1], on_message)
            body = json.dumps(
                {"route": {"steps": list(STEPS)}, "payload": {"text": "Hello world"}}
            ).encode()
            out = []
            for i in range(samples + 20):
                t0 = time.perf_counter()
                await pub.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=queues[0],
                    properties=spec.Basic.Properties(delivery_mode=2),
                )
                t1 = await asyncio.wait_for(arrived.get(), 30)
                if i >= 20:
                    out.append(t1 - t0)
            await conn.close()
            return out
    finally:
        await delete(url, exchange, queues)


class Http:
    """One keep-alive HTTP/1.1 connection: a request, then its response read whole (by
    Content-Length, or chunk by chunk with ``on_chunk`` called on each)."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._streams
        data = b"" if body is None else json.dumps(body).encode()
        kind = "Content-Type: application/json\r\n" if body is not None else ""
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.head}{kind}"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
        if b"content-length" in fields:
            return status, await reader.readexactly(int(fields[b"content-length"]))
        received = []
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            chunk = (await reader.readexactly(size + 2))[:-2]
            if on_chunk is not None:
                on_chunk(chunk)
            received.append(chunk)
        await reader.readexactly(2)
        return status, b"".join(received)

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            await self._streams[1].wait_closed()


async def wait_healthy(port: int) -> None:
    async with asyncio.timeout(60):
        while True:
            probe = Http(port, {})
            try:
                if (await probe.request("GET", "/healthz"))[0] == 200:
                    return
            except OSError:
                pass
            finally:
                await probe.close()
            await asyncio.sleep(0.2)


HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a live process (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU time of every PostgreSQL process now running (the server and its backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return total


@dataclass
class Cost:
    """CPU milliseconds per item, of the gateway and of PostgreSQL."""

    gateway_ms: float
    postgres_ms: float

    def __str__(self) -> str:
        return f"CPU gateway {self.gateway_ms:.2f} ms, PostgreSQL {self.postgres_ms:.2f} ms"


@contextmanager
def costed(gateway: int, items: Callable[[], int], into: list[Cost]) -> Iterator[None]:
    """Append the gateway's and PostgreSQL's CPU per item over the block to ``into``."""
    g0, p0 = cpu_seconds(gateway), postgres_cpu()
    yield
    n = items()
    into.append(Cost((cpu_seconds(gateway) - g0) * 1000 / n, (postgres_cpu() - p0) * 1000 / n))


async def measure(
    port: int, gateway: int, args: argparse.Namespace
) -> tuple[list[float], float, list[Cost]]:
    """Seed-pipeline latency through the gateway, then the rate of accepted tool calls, and
    what each cost in CPU per job and per call."""
    await wait_healthy(port)
    await pipeline_latency(port, 10)  # warm up every process
    costs: list[Cost] = []
    with costed(gateway, lambda: args.samples, costs):
        latencies = await pipeline_latency(port, args.samples)
    with costed(gateway, lambda: args.calls, costs):
        rate = await call_rate(port, args)
    return latencies, rate, costs


async def pipeline_latency(port: int, samples: int) -> list[float]:
    client = Http(port, HEADERS)
    body = {"tool": "classify_text", "arguments": {"text": "Hello world"}}

    async def latency_one() -> float:
        t0 = time.perf_counter()
        status, created = await client.request("POST", "/jobs", body)
        if status != 201:
            raise RuntimeError(f"POST /jobs: {status} {created!r}")
        seen: list[float] = []

        def on_chunk(chunk: bytes) -> None:
            if not seen and b'"succeeded"' in chunk:
                seen.append(time.perf_counter())

        job = json.loads(created)["id"]
        await client.request("GET", f"/jobs/{job}/events", on_chunk=on_chunk)
        if not seen:
            raise RuntimeError(f"job {job} did not succeed")
        return seen[0] - t0

    gateway_samples = [await latency_one() for _ in range(samples)]
    await client.close()
    return gateway_samples


async def call_rate(port: int, args: argparse.Namespace) -> float:
    accept = {"tool": "accept_only", "arguments": {"text": "Hello world"}}
    clients = [Http(port, HEADERS) for _ in range(args.concurrency)]
    share = [args.calls // args.concurrency] * args.concurrency
    share[0] += args.calls % args.concurrency

    async def calls(client: Http, n: int) -> None:
        try:
            for _ in range(n):
                status, answer = await client.request("POST", "/jobs", accept)
                if status != 201:
                    raise RuntimeError(f"POST /jobs: {status} {answer!r}")
        finally:
            await client.close()

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for client, n in zip(clients, share, strict=True):
            tg.create_task(calls(client, n))
    return args.calls / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    amqp, pg = os.environ.get("ASYA_TEST_AMQP_URL"), os.environ.get("ASYA_TEST_DATABASE_URL")
    if not amqp or not pg:
        raise SystemExit(
            'set ASYA_TEST_AMQP_URL and ASYA_TEST_DATABASE_URL (eval "$(bash .ci/services.sh)")'
        )
    tag = uuid.uuid4().hex[:6]
    exchange, q = f"bench-{tag}", {s: f"bench-{tag}-{s}" for s in STEPS}
    happy, error = f"bench-{tag}-happy", f"bench-{tag}-error"
    events_exchange, events_queue = f"bench-{tag}-events", f"bench-{tag}-gw-events"
    work = Path(tempfile.mkdtemp(prefix="asya-bench-gw-"))
    parked = f"bench-{tag}-parked"
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    tools = [
        {"name": "classify_text", "steps": [q[s] for s in STEPS], "input_schema": schema},
        {"name": "accept_only", "steps": [parked], "input_schema": schema},
    ]
    (work / "tools.yaml").write_text(json.dumps({"tools": tools}))
    await declare(amqp, exchange, [parked])
    port = free_port()
    base = dict(os.environ)
    async with fresh_database(pg) as database:
        with ExitStack() as stack:
            for step in STEPS:
                sock = str(work / f"{step}.sock")
                stack.enter_context(
                    process(
                        [sys.executable, "-m", "asya_runtime"],
                        base
                        | {
                            "ASYA_HANDLER": f"handlers:{step}",
                            "ASYA_SOCKET_PATH": sock,
                            "ASYA_LOG_LEVEL": "WARNING",
                            "PYTHONPATH": str(ROOT / "examples/seed"),
                        },
                    )
                )
                stack.enter_context(
                    process(
                        [sys.executable, "-m", "asya_sidecar"],
                        base
                        | {
                            "ASYA_ACTOR_NAME": q[step],
                            "ASYA_RABBITMQ_URL": amqp,
                            "ASYA_RABBITMQ_EXCHANGE": exchange,
                            "ASYA_SOCKET_PATH": sock,
                            "ASYA_HAPPY_END_QUEUE": happy,
                            "ASYA_ERROR_END_QUEUE": error,
                            "ASYA_EVENTS_EXCHANGE": events_exchange,
                            "ASYA_HTTP_PORT": "off",
                            "ASYA_CONCURRENCY": "8",
                            "ASYA_LOG_LEVEL": "WARNING",
                        },
                    )
                )
            gateway = stack.enter_context(
                process(
                    [sys.executable, "-m", "asya_gateway"],
                    base
                    | {
                        "ASYA_DATABASE_URL": database,
                        "ASYA_RABBITMQ_URL": amqp,
                        "ASYA_RABBITMQ_EXCHANGE": exchange,
                        "ASYA_EVENTS_EXCHANGE": events_exchange,
                        "ASYA_GATEWAY_EVENTS_QUEUE": events_queue,
                        "ASYA_HAPPY_END_QUEUE": happy,
                        "ASYA_ERROR_END_QUEUE": error,
                        "ASYA_GATEWAY_TOOLS": str(work / "tools.yaml"),
                        "ASYA_GATEWAY_TOKENS": TOKEN,
                        "ASYA_GATEWAY_PORT": str(port),
                        "ASYA_LOG_LEVEL": "WARNING",
                    },
                )
            )
            gateway_samples, rate, (per_job, per_call) = await measure(port, gateway.pid, args)
        await delete(amqp, exchange, [*q.values(), happy, error, events_queue, parked])
    raw_samples = await raw_latency(amqp, tag, args.samples)

    def q50_99(xs: list[float]) -> tuple[float, float]:
        qs = statistics.quantiles(xs, n=100)
        return qs[49] * 1000, qs[98] * 1000

    g50, g99 = q50_99(gateway_samples)
    r50, r99 = q50_99(raw_samples)
    print(
        f"tool calls (return at once, PostgreSQL): {rate:.0f}/s at concurrency {args.concurrency}"
        f"; {per_call} per call"
    )
    print(f"seed pipeline via gateway+sidecars+runtimes: p50 {g50:.1f} ms, p99 {g99:.1f} ms")
    print(f"  one job at a time: {per_job} per job")
    print(f"same three hops with raw aiormq:             p50 {r50:.1f} ms, p99 {r99:.1f} ms")
    print(f"ratio gateway/raw: p50 {g50 / r50:.1f}x, p99 {g99 / r99:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
