"""Micro-batching on a real model: messages per second through the embed actor of examples/embed
(all-MiniLM-L6-v2 in numpy) with batching off (size 1) and batches of 4, 16 and 32, one run.

Run: ``hatch run embed:batching`` with ``ASYA_TEST_AMQP_URL`` (or ``--amqp-url``) pointing at
RabbitMQ. One asya-runtime process serves ``handlers:Embedder.embed`` (``@batch(max_size=32,
max_wait=0.01)``, the model loaded once); for each size a fresh asya-sidecar process consumes
the actor's queue with ``ASYA_BATCH_MAX_SIZE`` = that size (1 turns batching off: one payload per
request), all else equal (``ASYA_CONCURRENCY``, the texts, the broker).

Each size: ``--window`` messages are kept in flight (a new one is published, confirmed, as each
result reaches the output queue), ``--warmup`` results are dropped, then ``--messages`` are
measured, in ``--rounds`` rounds that take every size in turn (the machine's load changes under a
shared benchmark; this way a change falls on every size alike). msg/s is the measured messages over
their time; the latency of a message is its publish to its result seen by this process (so it
includes waiting in the queue behind the window: under a steady load, latency is about window /
throughput). The texts are short customer messages of 5 to 20 tokens, cycled; a batch is padded
to its longest text. Ratios are to batch size 1 of the same run.

The runtime gets ``OPENBLAS_NUM_THREADS=1`` (``--threads``; 0 leaves numpy's default, one thread
per CPU): on a loaded machine OpenBLAS's threads, which spin while they wait for each other, make
every small matrix product wait for a descheduled thread, and size 1 (many small products) slows
by an order of magnitude more than size 16 does; see docs/development.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiormq
import httpx

from asya_testing.amqp import AmqpClient, AmqpNames, isolated_names
from asya_testing.processes import ManagedProcess, free_port, runtime_process, sidecar_process

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "embed"
HANDLER = "handlers:Embedder.embed"
SIZES = (1, 4, 16, 32)

TEXTS = [
    "Hello there, how are you?",
    "Your invoice #123 is overdue, please pay.",
    "I was charged twice for my subscription this month.",
    "The app crashes as soon as I open the settings page.",
    "Where is my order? It was supposed to arrive on Monday.",
    "Good morning!",
    "Can I get a refund for the headphones I returned last week?",
    "I cannot log in, it says my password is wrong but I just reset it.",
    "Thanks, that fixed it.",
    "The tracking number you sent me does not work.",
    "Please update the billing address on my account to 12 Main Street.",
    "Is there a discount for annual plans?",
    "My screen goes black after the latest update and nothing helps.",
    "Hi, nice to meet you.",
    "The parcel was delivered to the wrong address.",
    "How do I export my data to a spreadsheet?",
]


@dataclass
class Result:
    """One batch size, summed over the rounds."""

    size: int
    messages: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    batch_sum: float = 0.0
    batch_count: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def quantile_ms(self, q: int) -> float:
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000

    @property
    def mean_batch(self) -> float:
        """Deliveries per runtime request: the sidecar's ``asya_sidecar_batch_size`` sum over
        count (warm-up included); 1 when batching is off (no batches are recorded then)."""
        return self.batch_sum / self.batch_count if self.batch_count else 1.0


class Window:
    """Publishes up to ``window`` messages ahead of the results, and times each one."""

    def __init__(self, client: AmqpClient, queue: str, total: int, window: int) -> None:
        self.client = client
        self.queue = queue
        self.total = total
        self.window = window
        self.sent: dict[str, float] = {}
        self.latencies: list[tuple[float, float]] = []  # (arrival, latency)
        self.published = 0
        self.done = asyncio.Event()
        self.credit = asyncio.Semaphore(window)

    async def publisher(self) -> None:
        for n in range(self.total):
            await self.credit.acquire()
            message_id = str(uuid.uuid4())
            body = {
                "id": message_id,
                "route": {"steps": [self.queue]},
                "payload": {"chunk": n, "text": TEXTS[n % len(TEXTS)]},
            }
            self.sent[message_id] = time.perf_counter()
            await self.client.publish(self.queue, body)
            self.published += 1

    async def on_result(self, message: aiormq.abc.DeliveredMessage) -> None:
        now = time.perf_counter()
        envelope: dict[str, Any] = json.loads(message.body)
        started = self.sent.pop(envelope["id"])
        if "embedding" not in envelope["payload"]:
            raise RuntimeError(f"not a result: {str(envelope)[:300]}")
        self.latencies.append((now, now - started))
        self.credit.release()
        if len(self.latencies) == self.total:
            self.done.set()


async def measure(args: argparse.Namespace, socket_path: str, result: Result, logs: Path) -> None:
    """One round of one batch size, added to ``result``."""
    async with isolated_names(args.amqp_url) as names, AmqpClient(args.amqp_url, names) as client:
        source = names.queue("embed")
        await client.declare(source, names.happy_end, names.error_end)
        window = Window(client, source, args.warmup + args.messages // args.rounds, args.window)
        port = free_port()
        connection = await aiormq.connect(args.amqp_url)
        try:
            channel = await connection.channel()
            await channel.basic_qos(prefetch_count=args.window * 2)
            await channel.basic_consume(names.happy_end, window.on_result, no_ack=True)
            env = {
                "ASYA_RABBITMQ_URL": args.amqp_url,
                "ASYA_RABBITMQ_EXCHANGE": names.exchange,
                "ASYA_HAPPY_END_QUEUE": names.happy_end,
                "ASYA_ERROR_END_QUEUE": names.error_end,
                "ASYA_EVENTS_EXCHANGE": "",
                "ASYA_SOCKET_PATH": socket_path,
                "ASYA_CONCURRENCY": str(args.concurrency),
                "ASYA_BATCH_MAX_SIZE": str(result.size),
                "ASYA_LOG_LEVEL": "WARNING",
                "ASYA_HTTP_PORT": str(port),
            }
            with sidecar_process(source, env=env, log_dir=logs) as sidecar:
                async with asyncio.timeout(args.timeout), asyncio.TaskGroup() as tg:
                    tg.create_task(window.publisher())
                    await _watch(tg.create_task(window.done.wait()), sidecar, client, names)
                batch_sum, batch_count = await _batch_metric(port)
        finally:
            await connection.close()
    measured = window.latencies[args.warmup :]
    result.messages += len(measured) - 1
    result.seconds += measured[-1][0] - measured[0][0]
    result.latencies += [latency for _, latency in measured]
    result.batch_sum += batch_sum
    result.batch_count += batch_count


async def _watch(
    done: asyncio.Task[Any], sidecar: ManagedProcess, client: AmqpClient, names: AmqpNames
) -> None:
    """Until ``done``: fail if the sidecar exits or a message reaches error-end."""
    while not done.done():
        if not sidecar.alive():
            raise RuntimeError(f"the sidecar exited:\n{sidecar.log()}")
        if await client.depth(names.error_end):
            raise RuntimeError(f"error-end: {await client.drain(names.error_end)}")
        await asyncio.wait({done}, timeout=0.5)


async def _batch_metric(port: int) -> tuple[float, float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        name = name.split("{")[0]
        if name in ("asya_sidecar_batch_size_sum", "asya_sidecar_batch_size_count"):
            values[name] = float(value)
    return values.get("asya_sidecar_batch_size_sum", 0.0), values.get(
        "asya_sidecar_batch_size_count", 0.0
    )


def table(results: list[Result]) -> str:
    base = results[0]
    lines = [
        "| batch size | msg/s | p50 ms | p99 ms | mean batch | msg/s vs size 1 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.size} | {r.rate:.1f} | {r.quantile_ms(50):.0f} | {r.quantile_ms(99):.0f} "
            f"| {r.mean_batch:.1f} "
            f"| {r.rate / base.rate:.2f}x |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Result]:
    """One runtime for the whole run; each round measures every size once, in turn, so a change
    in the machine's load falls on every size alike."""
    threads = {}
    if args.threads:
        threads = {v: str(args.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    results = [Result(size) for size in args.sizes]
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as logs, ExitStack() as stack:
        _, socket_path = stack.enter_context(
            runtime_process(
                HANDLER,
                python_path=[str(EXAMPLE)],
                env={
                    "ASYA_LOG_LEVEL": "WARNING",
                    "ASYA_RUNTIME_CONCURRENCY": str(args.concurrency),
                    **threads,
                },
                log_dir=Path(logs),
                ready_timeout=60,
            )
        )
        for round_ in range(1, args.rounds + 1):
            for result in results:
                before = result.messages, result.seconds
                await measure(args, socket_path, result, Path(logs))
                rate = (result.messages - before[0]) / (result.seconds - before[1])
                print(f"round {round_}, batch {result.size:>2}: {rate:7.1f} msg/s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--amqp-url", default=os.environ.get("ASYA_TEST_AMQP_URL"))
    parser.add_argument("--messages", type=int, default=1000, help="measured per batch size")
    parser.add_argument("--warmup", type=int, default=100, help="results dropped first")
    parser.add_argument("--window", type=int, default=64, help="messages in flight")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="the sidecar's slots and the runtime's"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=2, help="each size measured this often")
    parser.add_argument(
        "--threads", type=int, default=1, help="the runtime's BLAS threads (0: numpy's default)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per batch size")
    args = parser.parse_args()
    if not args.amqp_url:
        raise SystemExit(
            'set ASYA_TEST_AMQP_URL or pass --amqp-url (eval "$(bash .ci/services.sh)")'
        )
    if args.sizes[0] != 1:
        args.sizes = [1, *args.sizes]
    load = os.getloadavg()[0]
    results = asyncio.run(run(args))
    print()
    print(
        f"{args.messages} messages per size in {args.rounds} rounds, window {args.window}, "
        f"sidecar concurrency {args.concurrency}, BLAS threads {args.threads or 'numpy default'}; "
        f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after, {os.cpu_count()} CPUs"
    )
    print(table(results))
    for r in results[1:]:
        print(f"batch {r.size} / batch 1: {r.rate / results[0].rate:.2f}x msg/s")


if __name__ == "__main__":
    main()
