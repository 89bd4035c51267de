"""Fixtures of the sidecar's tests: real runtime processes, in-process sidecars, and ``bus``,
the broker a behaviour test runs against: the in-memory one (what ``asya dev`` uses) and the
real RabbitMQ, so both transports are held to one contract."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from asya_protocol import (
    DEFAULT_ERROR_END_QUEUE,
    DEFAULT_HAPPY_END_QUEUE,
    StepEvent,
    decode_event,
    decode_events,
)
from asya_sidecar import MemoryBroker, Sidecar, SidecarSettings, amqp_sidecar, memory_sidecar
from asya_testing import AmqpClient, AmqpNames
from asya_testing.processes import ManagedProcess, runtime_process

HERE = str(Path(__file__).resolve().parent)


def base_settings(actor: str, socket_path: str, **kw: Any) -> SidecarSettings:
    """Settings for an in-process sidecar under test (no probe server, a patient start)."""
    base = SidecarSettings(
        actor=actor,
        socket_path=socket_path,
        http_host="127.0.0.1",
        http_port=None,
        runtime_wait=20.0,
        shutdown_grace=5.0,
    )
    return replace(base, **kw)


class MemoryBus:
    """The in-process broker, with the test-facing calls of :class:`AmqpClient`."""

    kind = "memory"

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.happy_end = DEFAULT_HAPPY_END_QUEUE
        self.error_end = DEFAULT_ERROR_END_QUEUE
        self.events: list[tuple[str, bytes]] = []
        self.broker.event_listeners.append(lambda key, body: self.events.append((key, body)))

    def queue(self, base: str) -> str:
        return base

    def sidecar(self, actor: str, socket_path: str, **kw: Any) -> Sidecar:
        return memory_sidecar(self.broker, base_settings(actor, socket_path, **kw))

    async def declare(self, *queues: str) -> None:
        for queue in queues:
            self.broker.declare(queue)

    async def publish(self, queue: str, body: bytes | dict[str, Any]) -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self.broker.declare(queue)  # as a queue declared beforehand on RabbitMQ
        await self.broker.publish(queue, body)

    async def take(self, queue: str, count: int, *, timeout: float) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            return [json.loads(await self.broker.get(queue, timeout=timeout)) for _ in range(count)]

    async def drain(self, queue: str) -> list[dict[str, Any]]:
        waiting = self.broker.queue(queue)
        return [json.loads(waiting.get_nowait().body) for _ in range(waiting.qsize())]

    async def depth(self, queue: str) -> int:
        return self.broker.depth(queue)

    async def control(self, body: bytes) -> None:
        """A control message, as the gateway sends it in process."""
        await self.broker.publish_control(body)


class AmqpBus:
    """Real RabbitMQ, with names of this test's own."""

    kind = "amqp"

    def __init__(self, url: str, names: AmqpNames, client: AmqpClient) -> None:
        self.url = url
        self.names = names
        self.client = client
        self.happy_end = names.happy_end
        self.error_end = names.error_end

    def queue(self, base: str) -> str:
        return self.names.queue(base)

    def sidecar(self, actor: str, socket_path: str, **kw: Any) -> Sidecar:
        return amqp_sidecar(amqp_settings(self.url, self.names, actor, socket_path, **kw))

    async def declare(self, *queues: str) -> None:
        await self.client.declare(*queues)

    async def publish(self, queue: str, body: bytes | dict[str, Any]) -> None:
        await self.client.publish(queue, body)

    async def take(self, queue: str, count: int, *, timeout: float) -> list[dict[str, Any]]:
        return await self.client.take(queue, count, timeout=timeout)

    async def drain(self, queue: str) -> list[dict[str, Any]]:
        return await self.client.drain(queue)

    async def depth(self, queue: str) -> int:
        return await self.client.depth(queue)

    async def control(self, body: bytes) -> None:
        """A control message on this test's control exchange, as the gateway sends it."""
        await self.client.publish_control(body)


Bus = MemoryBus | AmqpBus


def amqp_settings(
    url: str, names: AmqpNames, actor: str, socket_path: str, **kw: Any
) -> SidecarSettings:
    kw = {
        "rabbitmq_url": url,
        "exchange": names.exchange,
        "happy_end": names.happy_end,
        "error_end": names.error_end,
        "events_exchange": names.events_exchange,
        "control_exchange": names.control_exchange,
        **kw,
    }
    return base_settings(actor, socket_path, **kw)


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.integration)])
def bus(request: pytest.FixtureRequest) -> Bus:
    """The broker of a behaviour test: each such test runs on both transports. The amqp case
    needs RabbitMQ (ASYA_TEST_AMQP_URL): skipped without one locally, a failure under CI."""
    chosen: Bus = request.getfixturevalue(f"{request.param}_bus")
    return chosen


@pytest.fixture
def memory_bus() -> Iterator[MemoryBus]:
    """The in-process broker (what ``asya dev`` runs on)."""
    memory = MemoryBus()
    yield memory
    memory.broker.close()


@pytest.fixture
async def amqp_bus(amqp_url: str, amqp_names: AmqpNames) -> AsyncIterator[AmqpBus]:
    """Real RabbitMQ with this test's own exchange and queues, and a client connection."""
    async with AmqpClient(amqp_url, amqp_names) as client:
        yield AmqpBus(amqp_url, amqp_names, client)


class Flow:
    """Count conservation: every message put in comes out in happy-end or error-end;
    duplicates are allowed only after a crash, and carry the same id."""

    @staticmethod
    async def publish_many(bus: Bus, queue: str, count: int, **payload: Any) -> set[str]:
        ids = set()
        for i in range(count):
            ids.add(f"m-{i}")
            envelope = {"id": f"m-{i}", "route": {"steps": [queue]}, "payload": {"i": i, **payload}}
            await bus.publish(queue, envelope)
        return ids

    @staticmethod
    async def wait_for_depth(bus: Bus, queue: str, at_least: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while await bus.depth(queue) < at_least:  # noqa: ASYNC110 - polls the broker
                await asyncio.sleep(0.05)

    @staticmethod
    async def collect_ids(
        bus: Bus, expected: set[str], timeout: float
    ) -> dict[str, list[dict[str, Any]]]:
        """Read both terminal queues until every expected id has arrived somewhere."""
        seen: dict[str, list[dict[str, Any]]] = {}
        async with asyncio.timeout(timeout):
            while not expected <= seen.keys():
                for queue in (bus.happy_end, bus.error_end):
                    for message in await bus.drain(queue):
                        seen.setdefault(message["id"], []).append(message)
                await asyncio.sleep(0.05)
        return seen

    @staticmethod
    def assert_conserved(seen: dict[str, list[dict[str, Any]]], expected: set[str]) -> None:
        assert seen.keys() == expected, (
            f"missing {expected - seen.keys()}, extra {seen.keys() - expected}"
        )
        for mid, copies in seen.items():
            assert all(c["id"] == mid for c in copies)
            assert all("error" not in c["payload"] for c in copies), copies


@pytest.fixture
def flow() -> type[Flow]:
    return Flow


@pytest.fixture
def sidecar_settings(amqp_url: str, amqp_names: AmqpNames) -> Any:
    """Settings of a sidecar on RabbitMQ, for the tests that need the real broker."""

    def make(actor: str, socket_path: str, **kw: Any) -> SidecarSettings:
        return amqp_settings(amqp_url, amqp_names, actor, socket_path, **kw)

    return make


@pytest.fixture
def make_sidecars(bus: Bus, runtimes: Any) -> Any:
    """In-process sidecars on ``bus`` for (queue base name, handler) pairs, each with its own
    runtime process; ``runtime_env`` goes to the runtimes, the rest to the settings."""

    def make(specs: list[tuple[str, str]], **kw: Any) -> list[Sidecar]:
        runtime_env = kw.pop("runtime_env", None) or {}
        sidecars = []
        for base, handler in specs:
            _, path = runtimes(handler, env=runtime_env)
            sidecars.append(bus.sidecar(bus.queue(base), path, **kw))
        return sidecars

    return make


@pytest.fixture
def run_sidecars() -> Any:
    return running_sidecars


@asynccontextmanager
async def running_sidecars(sidecars: list[Sidecar]) -> AsyncIterator[None]:
    """Run in-process sidecars until the block ends; fail loudly if one dies early."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        for sidecar in sidecars:
            tg.create_task(sidecar.run(stop), name=f"sidecar-{sidecar.settings.actor}")
        try:
            async with asyncio.timeout(30):
                for sidecar in sidecars:
                    await sidecar.consuming.wait()
            yield
        finally:
            stop.set()


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[Any]:
    """Start asya-runtime processes serving handlers from pipeline_handlers.py."""
    with ExitStack() as stack:

        def start(handler: str, **kwargs: Any) -> tuple[ManagedProcess, str]:
            spec = handler if ":" in handler else f"pipeline_handlers:{handler}"
            return stack.enter_context(
                runtime_process(spec, python_path=[HERE], log_dir=tmp_path, **kwargs)
            )

        yield start


@pytest.fixture
def supervisor() -> Any:
    return Supervisor


class Supervisor:
    """Restarts a runtime when it exits, as the kubelet restarts a crashed container."""

    def __init__(self, start: Any, handler: str, socket_path: str, env: dict[str, str]) -> None:
        self._start = start
        self.handler = handler
        self.socket_path = socket_path
        self.env = env
        self.restarts = 0
        self._stop = threading.Event()
        self.current: ManagedProcess | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Supervisor:
        self.current = self._launch(wait_ready=True)
        self._thread.start()
        return self

    def _launch(self, *, wait_ready: bool) -> ManagedProcess:
        proc, _ = self._start(
            self.handler, socket_path=self.socket_path, env=self.env, wait_ready=wait_ready
        )
        return proc

    def _loop(self) -> None:
        # A restarted runtime is not waited on: the sidecar may hand it a message (the poison
        # again) that kills it before a readiness ping would answer; this loop sees that exit.
        while not self._stop.wait(0.05):
            if self.current is not None and not self.current.alive() and self.restarts < 50:
                self.restarts += 1
                self.current = self._launch(wait_ready=False)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def watch_events() -> Any:
    """:func:`watching_events`: ``async with watch_events(bus) as events``."""
    return watching_events


Events = Callable[[], Awaitable[list[StepEvent]]]


@asynccontextmanager
async def watching_events(bus: Any) -> AsyncIterator[Events]:
    """The step events published while the block runs (read them after the result is in:
    partial events are confirmed before the result is published)."""
    if bus.kind == "memory":

        async def memory() -> list[StepEvent]:
            return [decode_event(body) for _, body in bus.events]

        yield memory
        return
    import aiormq

    queue = bus.names.queue("partial-events")
    connection = await aiormq.connect(bus.url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(
            bus.names.events_exchange, exchange_type="topic", durable=True
        )
        await channel.queue_declare(queue, durable=True)
        await channel.queue_bind(queue, bus.names.events_exchange, routing_key="#")
        got: list[StepEvent] = []

        async def amqp() -> list[StepEvent]:
            while True:
                message = await channel.basic_get(queue, no_ack=True)
                if isinstance(message.delivery, aiormq.spec.Basic.GetEmpty):
                    return got
                got.extend(decode_events(message.body))

        yield amqp
        await channel.queue_delete(queue)
    finally:
        await connection.close()
