"""The seed pipeline in Asya and in its peers, on one RabbitMQ: throughput, latency, CPU, RSS.

Run: ``hatch run peers:run --rounds 7`` with ``ASYA_TEST_AMQP_URL`` (or ``--amqp-url``) pointing
at RabbitMQ. The pipeline is examples/seed/handlers.py's three steps (preprocess -> inference ->
postprocess), one worker process per step (Asya: a runtime and a sidecar per step), the last step
publishing to a sink queue that this harness consumes. Every system gets the same reliability:
durable queues, persistent messages, publisher confirms awaited before the ack, the ack after the
work, and 16 messages in flight per step (prefetch 16 and 16 concurrent handlers or threads):

- raw: an aiormq loop per step, the floor: consume -> handler -> publish (confirm awaited) -> ack;
- faststream: RabbitBroker subscriber (Channel(prefetch_count=16), publisher_confirms=True, the
  default; AckPolicy.NACK_ON_ERROR: ack after the handler and its publish) with a
  ``@broker.publisher(persist=True, mandatory=True)`` to the next queue; aiormq runs up to
  prefetch deliveries at once;
- dramatiq: RabbitmqBroker(confirm_delivery=True), one process with a 16-thread Worker,
  queue prefetch 16 (``dramatiq_queue_prefetch``); dramatiq acks after the actor returns and
  publishes persistent messages;
- celery: threads pool of 16, task_acks_late, prefetch multiplier 1 (prefetch 16),
  confirm_publish, persistent delivery mode, no result backend, no remote control or events;
- asya: asya-runtime + asya-sidecar per step, ASYA_CONCURRENCY=16, ASYA_RUNTIME_CONCURRENCY=16,
  route [step1, step2, step3], happy end = the sink; each message carries a job header as the
  gateway's do; step events on, to a topic exchange with a queue bound to ``#`` as the gateway
  binds it and consumed by this harness as the gateway consumes it (the round's line shows the
  events per message), or off (asya-noevents); the handlers wrapped as ``async def`` (asya,
  asya-noevents) or the seed's own ``def`` (asya-def); on the loop ASYA_EVENT_LOOP=auto picks
  (uvloop: the peers environment has it, as the images do), or on the standard library's loop
  (asya-stdloop), as the peers run.

Per system and round, in fresh processes and fresh queues: RSS of every worker process at rest
(consuming, before the first message; every module's bytecode compiled first, as in the
images), a warm-up, throughput (N messages published at once; N over the time from the first
publish until the sink has them all), the three steps' CPU time (user+sys of every worker
process over the throughput run, per message) and latency with one message in flight (publish
-> seen in the sink). Rounds are interleaved across systems (the order
rotates each round); the table shows medians over rounds and ratios against FastStream and raw.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed"
STEPS = ("preprocess", "inference", "postprocess")
CONCURRENCY = 16
SYSTEMS = (
    "raw",
    "faststream",
    "dramatiq",
    "celery",
    "asya",
    "asya-noevents",
    "asya-def",
    "asya-stdloop",
)
LABELS = {
    "raw": "aiormq loop (floor)",
    "faststream": "FastStream",
    "dramatiq": "Dramatiq",
    "celery": "Celery",
    "asya": "Asya, events on",
    "asya-noevents": "Asya, events off",
    "asya-def": "Asya, events on, `def` handlers",
    "asya-stdloop": "Asya, events on, stdlib loop",
}
ASYNC_HANDLERS = """\
from handlers import inference as _inference, postprocess as _postprocess, preprocess as _preprocess


async def preprocess(payload):
    return _preprocess(payload)


async def inference(payload):
    return _inference(payload)


async def postprocess(payload):
    return _postprocess(payload)
"""


# ---------------------------------------------------------------------------------------------
# Workers: ``peers.py worker SYSTEM URL SOURCE TARGET STEP`` (one process per step). Each imports
# only its own framework, so its RSS is its own.


def seed_handler(step: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    sys.path.insert(0, str(SEED))
    import handlers

    fn: Callable[[dict[str, Any]], dict[str, Any]] = getattr(handlers, step)
    return fn


async def _until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def raw_worker(url: str, source: str, target: str, step: str) -> None:
    import aiormq
    from pamqp import commands as spec

    handler = seed_handler(step)
    connection = await aiormq.connect(url)
    consume = await connection.channel()
    publish = await connection.channel(publisher_confirms=True)
    await consume.basic_qos(prefetch_count=CONCURRENCY)
    properties = spec.Basic.Properties(delivery_mode=2, content_type="application/json")

    async def on_message(message: Any) -> None:
        body = json.dumps(handler(json.loads(message.body))).encode()
        confirm = await publish.basic_publish(
            body, exchange="", routing_key=target, properties=properties, mandatory=True
        )
        if not isinstance(confirm, spec.Basic.Ack):
            raise RuntimeError(f"publish to {target} not confirmed")
        await consume.basic_ack(message.delivery_tag)

    await consume.basic_consume(source, on_message)
    try:
        await _until_terminated()
    finally:
        await connection.close()


async def faststream_worker(url: str, source: str, target: str, step: str) -> None:
    from faststream import AckPolicy
    from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

    handler = seed_handler(step)
    broker = RabbitBroker(url, log_level=30)  # publisher_confirms=True is Channel's default

    @broker.publisher(RabbitQueue(target, durable=True), persist=True, mandatory=True)
    @broker.subscriber(
        RabbitQueue(source, durable=True),
        channel=Channel(prefetch_count=CONCURRENCY, publisher_confirms=True),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def handle(payload: dict[str, Any]) -> dict[str, Any]:
        return handler(payload)

    await broker.start()
    try:
        await _until_terminated()
    finally:
        await broker.stop()


def dramatiq_worker(url: str, source: str, target: str, step: str) -> None:
    import threading

    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    handler = seed_handler(step)
    broker = RabbitmqBroker(url=url, confirm_delivery=True)
    dramatiq.set_broker(broker)
    index = STEPS.index(step)
    following = f"step{index + 2}" if index + 1 < len(STEPS) else "sink"

    # Dramatiq sends to a queue through an actor declared on it; this process only sends, the
    # next step's worker process (or the harness, for the sink) consumes that queue.
    @dramatiq.actor(queue_name=target, actor_name=following)
    def downstream(payload: dict[str, Any]) -> None:
        raise RuntimeError(f"{following} runs in the process consuming {target!r}, not here")

    @dramatiq.actor(queue_name=source, actor_name=f"step{index + 1}")
    def run(payload: dict[str, Any]) -> None:
        downstream.send(handler(payload))

    worker = dramatiq.Worker(broker, queues={source}, worker_threads=CONCURRENCY)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    try:
        stop.wait()
    finally:
        worker.stop()
        broker.close()


def celery_app(url: str, name: str = "peers") -> Any:
    from celery import Celery

    app = Celery(name, broker=url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_default_delivery_mode="persistent",
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


def celery_worker(url: str, source: str, target: str, step: str) -> None:
    handler = seed_handler(step)
    app = celery_app(url)
    app.conf.task_default_queue = source
    index = STEPS.index(step)
    following = f"step{index + 2}" if index + 1 < len(STEPS) else "sink"

    @app.task(name=f"step{index + 1}")
    def run(payload: dict[str, Any]) -> None:
        app.send_task(following, args=(handler(payload),), queue=target)

    app.worker_main(
        argv=[
            "worker",
            "--queues",
            source,
            "--pool",
            "threads",
            "--concurrency",
            str(CONCURRENCY),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ]
    )


def worker_main(argv: list[str]) -> None:
    system, url, source, target, step = argv
    match system:
        case "raw":
            asyncio.run(raw_worker(url, source, target, step))
        case "faststream":
            asyncio.run(faststream_worker(url, source, target, step))
        case "dramatiq":
            dramatiq_worker(url, source, target, step)
        case "celery":
            celery_worker(url, source, target, step)
        case _:
            raise SystemExit(f"unknown worker {system!r}")


# ---------------------------------------------------------------------------------------------
# The harness.


@dataclass
class Names:
    system: str
    prefix: str
    steps: list[str]
    sink: str

    @property
    def error(self) -> str:
        return self.sink + "-err"

    @property
    def exchange(self) -> str:
        return self.prefix + "-x"

    @property
    def events_exchange(self) -> str:
        return self.prefix + "-events"

    @property
    def events_queue(self) -> str:
        return self.prefix + "-events"


@dataclass
class Sample:
    throughput: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # per message, three steps
    rss_mb: float  # per step, at rest
    procs: int  # processes per step
    events: float = 0.0  # step events seen per message of the burst (Asya)
    event_messages: float = 0.0  # the broker messages that carried them (batches), per message


@dataclass
class Step:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def dramatiq_args(queue: str) -> dict[str, Any]:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue + ".XQ"}


class Broker:
    """The harness's connection: declares, publishes, consumes the sink, deletes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.arrived = 0
        self._want = 0
        self._reached = asyncio.Event()
        self.sink_tag: str | None = None
        self.events = 0
        self.event_messages = 0
        self.events_tag: str | None = None

    async def __aenter__(self) -> Broker:
        import aiormq

        self.connection = await aiormq.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.sink_channel = await self.connection.channel()
        self.events_channel = await self.connection.channel()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def declare(self, n: Names) -> None:
        ch = self.channel
        match n.system:
            case "dramatiq":
                for q in [*n.steps, n.sink]:
                    await ch.queue_declare(q, durable=True, arguments=dramatiq_args(q))
                    await ch.queue_declare(q + ".DQ", durable=True, arguments=dramatiq_args(q))
                    await ch.queue_declare(
                        q + ".XQ", durable=True, arguments={"x-message-ttl": 86400000 * 7}
                    )
            case "asya" | "asya-noevents" | "asya-def" | "asya-stdloop":
                await ch.exchange_declare(n.exchange, exchange_type="topic", durable=True)
                for q in [*n.steps, n.sink, n.error]:
                    await ch.queue_declare(q, durable=True)
                    await ch.queue_bind(q, n.exchange, routing_key=q)
                if n.system != "asya-noevents":
                    await ch.exchange_declare(
                        n.events_exchange, exchange_type="topic", durable=True
                    )
                    await ch.queue_declare(n.events_queue, durable=True)
                    await ch.queue_bind(n.events_queue, n.events_exchange, routing_key="#")
            case _:
                for q in [*n.steps, n.sink]:
                    await ch.queue_declare(q, durable=True)

    async def delete(self, n: Names) -> None:
        ch = self.channel
        if self.sink_tag is not None:
            await self.sink_channel.basic_cancel(self.sink_tag)
            self.sink_tag = None
        if self.events_tag is not None:
            await self.events_channel.basic_cancel(self.events_tag)
            self.events_tag = None
        queues = [*n.steps, n.sink, n.error, n.events_queue]
        queues += [q + suffix for q in [*n.steps, n.sink] for suffix in (".DQ", ".XQ")]
        for q in queues:
            with contextlib.suppress(Exception):
                await ch.queue_delete(q)
        # Celery declares a direct exchange per queue name; Asya a topic exchange and events.
        for x in [*n.steps, n.sink, n.exchange, n.events_exchange]:
            with contextlib.suppress(Exception):
                await ch.exchange_delete(x)

    async def consumers(self, queue: str) -> int:
        ok = await self.channel.queue_declare(queue, passive=True)
        return int(ok.consumer_count or 0)

    async def depth(self, queue: str) -> int:
        ok = await self.channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)

    async def consume_sink(self, queue: str) -> None:
        async def on_message(message: Any) -> None:
            self.arrived += 1
            if self.arrived >= self._want:
                self._reached.set()

        await self.sink_channel.basic_qos(prefetch_count=1000)
        ok = await self.sink_channel.basic_consume(queue, on_message, no_ack=True)
        self.sink_tag = ok.consumer_tag

    async def consume_events(self, queue: str) -> None:
        """Take Asya's step events off their queue as the gateway does (a queue nobody reads
        would grow through the run and cost the broker more than a deployment's does)."""

        from asya_protocol import decode_events

        async def on_message(message: Any) -> None:
            self.events += len(decode_events(message.body))
            self.event_messages += 1

        await self.events_channel.basic_qos(prefetch_count=1000)
        ok = await self.events_channel.basic_consume(queue, on_message, no_ack=True)
        self.events_tag = ok.consumer_tag

    async def until(self, count: int, timeout: float) -> None:
        """Wait until the sink has seen ``count`` messages in all."""
        self._want = count
        self._reached.clear()
        if self.arrived >= count:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._reached.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the sink saw {self.arrived} of {count} messages within {timeout}s"
            ) from None

    async def publish(self, exchange: str, routing_key: str, message: Message) -> None:
        from pamqp import commands as spec

        body, props = message
        await self.channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=spec.Basic.Properties(delivery_mode=2, **props),
            mandatory=True,
        )


Message = tuple[bytes, dict[str, Any]]


def first_message(n: Names, payload: dict[str, Any]) -> Callable[[], Message]:
    """What each system's first step expects on the wire (built by the system's own code)."""
    json_props = {"content_type": "application/json"}
    match n.system:
        case "raw" | "faststream":
            body = json.dumps(payload).encode()
            return lambda: (body, json_props)
        case "asya" | "asya-noevents" | "asya-def" | "asya-stdloop":
            # A gateway job's message (the job header): step events go out for it, as for every
            # message the gateway starts (ASYA_STEP_EVENTS=jobs skips messages of no job).
            envelope = {
                "route": {"steps": n.steps, "current": 0},
                "headers": {"asya-job-id": f"bench-{uuid.uuid4().hex}"},
                "payload": payload,
            }
            body = json.dumps(envelope).encode()
            return lambda: (body, json_props)
        case "dramatiq":
            import dramatiq

            def dramatiq_message() -> Message:
                m = dramatiq.Message(
                    queue_name=n.steps[0],
                    actor_name="step1",
                    args=(payload,),
                    kwargs={},
                    options={},
                )
                return m.encode(), {}

            return dramatiq_message
        case "celery":
            from kombu.serialization import dumps

            app = celery_app("amqp://unused/", name="peers-harness")

            def celery_message() -> Message:
                task_id = str(uuid.uuid4())
                m = app.amqp.as_task_v2(task_id, "step1", args=(payload,), kwargs={})
                content_type, encoding, data = dumps(m.body, serializer="json")
                headers = {k: v for k, v in m.headers.items() if v is not None}
                props = {
                    "content_type": content_type,
                    "content_encoding": encoding,
                    "correlation_id": task_id,
                    "headers": headers,
                }
                return data.encode() if isinstance(data, str) else data, props

            return celery_message
    raise ValueError(n.system)


def start(n: Names, url: str, workdir: str, logs: list[str]) -> list[Step]:
    steps: list[Step] = []
    env = dict(os.environ)
    targets = [*n.steps[1:], n.sink]

    def spawn(argv: list[str], extra: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = os.path.join(workdir, f"{name}.log")
        logs.append(log)
        with open(log, "wb") as out:
            return subprocess.Popen(
                argv, env=env | extra, stdout=out, stderr=subprocess.STDOUT, cwd=workdir
            )

    for i, (queue, target, step) in enumerate(zip(n.steps, targets, STEPS, strict=True)):
        s = Step()
        steps.append(s)
        if n.system.startswith("asya"):
            sock = os.path.join(workdir, f"s{i}.sock")
            module = "handlers" if n.system == "asya-def" else "peers_async"
            loop = {"ASYA_EVENT_LOOP": "asyncio" if n.system == "asya-stdloop" else "auto"}
            s.procs.append(
                spawn(
                    [sys.executable, "-m", "asya_runtime"],
                    {
                        "ASYA_HANDLER": f"{module}:{step}",
                        "ASYA_SOCKET_PATH": sock,
                        "PYTHONPATH": os.pathsep.join(
                            filter(None, [workdir, str(SEED), os.environ.get("PYTHONPATH")])
                        ),
                        "ASYA_LOG_LEVEL": "WARNING",
                        "ASYA_RUNTIME_CONCURRENCY": str(CONCURRENCY),
                    }
                    | loop,
                    f"{step}-runtime",
                )
            )
            s.procs.append(
                spawn(
                    [sys.executable, "-m", "asya_sidecar"],
                    {
                        "ASYA_ACTOR_NAME": queue,
                        "ASYA_RABBITMQ_URL": url,
                        "ASYA_RABBITMQ_EXCHANGE": n.exchange,
                        "ASYA_SOCKET_PATH": sock,
                        "ASYA_HAPPY_END_QUEUE": n.sink,
                        "ASYA_ERROR_END_QUEUE": n.error,
                        "ASYA_CONCURRENCY": str(CONCURRENCY),
                        "ASYA_HTTP_PORT": "off",
                        "ASYA_EVENTS_EXCHANGE": (
                            "" if n.system == "asya-noevents" else n.events_exchange
                        ),
                        "ASYA_LOG_LEVEL": "WARNING",
                    }
                    | loop,
                    f"{step}-sidecar",
                )
            )
        else:
            extra = {"dramatiq_queue_prefetch": str(CONCURRENCY)}
            argv = [sys.executable, "-P", __file__, "worker", n.system, url, queue, target, step]
            s.procs.append(spawn(argv, extra, f"{step}-{n.system}"))
    return steps


def stop(steps: list[Step]) -> None:
    procs = [p for s in steps for p in s.procs]
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def tree(pid: int) -> Iterator[Any]:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        yield proc
        yield from proc.children(recursive=True)


def cpu_seconds(steps: list[Step]) -> float:
    total = 0.0
    for s in steps:
        for p in s.procs:
            for proc in tree(p.pid):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def rss_mb(step: Step) -> float:
    return sum(proc.memory_info().rss for p in step.procs for proc in tree(p.pid)) / 2**20


def compile_bytecode() -> None:
    """Write the bytecode of every module the workers may import, as pip does when it installs
    (the images are built so). uv installs without it, and with PYTHONDONTWRITEBYTECODE set a
    worker would compile each module it imports from source at every start: its RSS at rest
    would hold the compiler's leftovers (typing_extensions alone leaves about 7 MB), more for
    a system that imports more."""
    progress("compiling the environment's bytecode (as pip does when it installs) ...")
    roots = [Path(p) for p in sys.path if "site-packages" in p or p.endswith("/src")]
    for root in [*roots, SEED]:
        # A file that does not compile (some packages ship a few) cannot be imported either.
        if root.is_dir():
            compileall.compile_dir(root, quiet=1, workers=0)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def wait_ready(broker: Broker, n: Names, steps: list[Step], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            for s in steps:
                for p in s.procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"a worker exited with {p.returncode} before consuming")
            counts = [await broker.consumers(q) for q in n.steps]
            if all(c >= 1 for c in counts):
                return
            await asyncio.sleep(0.05)


async def measure(system: str, args: argparse.Namespace, workdir: str) -> Sample:
    tag = uuid.uuid4().hex[:8]
    prefix = f"peers-{tag}-{system}"
    n = Names(system, prefix, [f"{prefix}-{i + 1}" for i in range(len(STEPS))], f"{prefix}-sink")
    payload = {"text": args.text}
    make = first_message(n, payload)
    exchange = n.exchange if system.startswith("asya") else ""
    logs: list[str] = []
    async with Broker(args.amqp_url) as broker:
        try:
            await broker.declare(n)
            steps = start(n, args.amqp_url, workdir, logs)
            try:
                await wait_ready(broker, n, steps, timeout=90)
                rss = [rss_mb(s) for s in steps]
                await broker.consume_sink(n.sink)
                if system.startswith("asya") and system != "asya-noevents":
                    await broker.consume_events(n.events_queue)

                async def burst(count: int) -> None:
                    for i in range(0, count, 500):
                        await asyncio.gather(
                            *(
                                broker.publish(exchange, n.steps[0], make())
                                for _ in range(min(500, count - i))
                            )
                        )

                await burst(args.warmup)
                await broker.until(args.warmup, timeout=120)
                cpu0 = cpu_seconds(steps)
                events0, messages0 = broker.events, broker.event_messages
                started = time.perf_counter()
                await burst(args.messages)
                await broker.until(args.warmup + args.messages, timeout=args.timeout)
                elapsed = time.perf_counter() - started
                cpu = cpu_seconds(steps) - cpu0
                events = broker.events - events0  # those of the burst seen by its end
                event_messages = broker.event_messages - messages0
                samples = []
                for _ in range(args.latency_samples):
                    seen = broker.arrived
                    t0 = time.perf_counter()
                    await broker.publish(exchange, n.steps[0], make())
                    await broker.until(seen + 1, timeout=30)
                    samples.append(time.perf_counter() - t0)
                q = statistics.quantiles(samples, n=100, method="inclusive")
                return Sample(
                    throughput=args.messages / elapsed,
                    p50_ms=statistics.median(samples) * 1000,
                    p99_ms=q[98] * 1000,
                    cpu_ms=cpu / args.messages * 1000,
                    rss_mb=statistics.mean(rss),
                    procs=len(steps[0].procs),
                    events=events / args.messages,
                    event_messages=event_messages / args.messages,
                )
            except BaseException:
                if system.startswith("asya"):
                    with contextlib.suppress(Exception):
                        progress(f"  error-end holds {await broker.depth(n.error)} messages")
                for log in logs:
                    with contextlib.suppress(OSError), open(log, "rb") as f:  # noqa: ASYNC230
                        tail = f.read()[-1500:].decode(errors="replace").strip()
                    if tail:
                        progress(f"  --- {os.path.basename(log)}:\n{tail}")
                raise
            finally:
                stop(steps)
        finally:
            await broker.delete(n)


def cell(value: float, ref: dict[str, float], fmt: str) -> str:
    ratios = [f"{value / ref[k]:.2f}x {k}" for k in ("FS", "raw") if k in ref and ref[k] > 0]
    return f"{value:{fmt}} ({', '.join(ratios)})" if ratios else f"{value:{fmt}}"


def table(results: dict[str, list[Sample]], systems: list[str]) -> str:
    med: dict[str, dict[str, float]] = {}
    for system in systems:
        got = results[system]
        if got:
            med[system] = {
                k: statistics.median(getattr(s, k) for s in got)
                for k in ("throughput", "p50_ms", "p99_ms", "cpu_ms", "rss_mb")
            }

    def refs(metric: str) -> dict[str, float]:
        out = {}
        if "faststream" in med:
            out["FS"] = med["faststream"][metric]
        if "raw" in med:
            out["raw"] = med["raw"][metric]
        return out

    lines = [
        "| system | rounds | throughput, msg/s | p50 latency, ms | p99 latency, ms "
        "| CPU per message, ms (3 steps) | RSS at rest per step, MB (processes) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system in systems:
        if system not in med:
            lines.append(f"| {LABELS[system]} | 0 | failed | | | | |")
            continue
        m = med[system]
        procs = results[system][0].procs
        lines.append(
            f"| {LABELS[system]} | {len(results[system])} "
            f"| {cell(m['throughput'], refs('throughput'), '.0f')} "
            f"| {cell(m['p50_ms'], refs('p50_ms'), '.2f')} "
            f"| {cell(m['p99_ms'], refs('p99_ms'), '.2f')} "
            f"| {cell(m['cpu_ms'], refs('cpu_ms'), '.2f')} "
            f"| {cell(m['rss_mb'], refs('rss_mb'), '.1f')} ({procs}) |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--amqp-url", default=os.environ.get("ASYA_TEST_AMQP_URL"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5000, help="published at once")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the burst")
    parser.add_argument("--text", default="Hello world", help="the seed's input text")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {','.join(SYSTEMS)}"
    )
    args = parser.parse_args(argv)
    if not args.amqp_url:
        raise SystemExit(
            'set ASYA_TEST_AMQP_URL or pass --amqp-url (eval "$(bash .ci/services.sh)")'
        )
    systems = [s for s in args.systems.split(",") if s]
    if unknown := set(systems) - set(SYSTEMS):
        raise SystemExit(f"unknown systems: {sorted(unknown)}")
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="asya-peers-") as workdir:
        Path(workdir, "peers_async.py").write_text(ASYNC_HANDLERS)
        results = asyncio.run(run_rounds(args, systems, workdir))
    print(table(results, systems))
    print(
        f"\nmedians of {args.rounds} interleaved rounds; {args.messages} messages at once, "
        f"{args.latency_samples} sequential for latency; ratios: value / FastStream's (FS), "
        "value / the aiormq floor's (raw)"
    )
    return 0 if all(results.values()) else 1


async def run_rounds(
    args: argparse.Namespace, systems: list[str], workdir: str
) -> dict[str, list[Sample]]:
    results: dict[str, list[Sample]] = {s: [] for s in systems}
    for r in range(args.rounds):
        shift = r % len(systems)
        for system in systems[shift:] + systems[:shift]:
            progress(f"round {r + 1}/{args.rounds}: {system} ...")
            try:
                s = await measure(system, args, workdir)
            except Exception as exc:  # noqa: BLE001 - one failed run is reported, not fatal
                progress(f"round {r + 1}/{args.rounds}: {system} FAILED: {exc!r}")
                continue
            results[system].append(s)
            progress(
                f"round {r + 1}/{args.rounds}: {system}: {s.throughput:.0f} msg/s, "
                f"p50 {s.p50_ms:.2f} ms, p99 {s.p99_ms:.2f} ms, "
                f"CPU {s.cpu_ms:.2f} ms/msg, RSS {s.rss_mb:.1f} MB/step"
                + (
                    f", {s.events:.2f} step events in {s.event_messages:.2f} broker messages/msg"
                    if s.events
                    else ""
                )
            )
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_main(sys.argv[2:])
    else:
        raise SystemExit(main(sys.argv[1:]))
