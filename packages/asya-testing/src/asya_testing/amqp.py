"""Per-test RabbitMQ names, so tests sharing one broker never see each other's messages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AmqpClient", "AmqpNames", "isolated_names"]


@dataclass
class AmqpNames:
    """Unique names for one test. ``queue("inference")`` -> ``"inference-<suffix>"``.

    Every name handed out is deleted from the broker when the test ends.
    """

    suffix: str
    exchange: str
    events_exchange: str = ""
    control_exchange: str = ""
    queues: list[str] = field(default_factory=list)

    def queue(self, base: str) -> str:
        name = f"{base}-{self.suffix}"
        if name not in self.queues:
            self.queues.append(name)
        return name

    @property
    def happy_end(self) -> str:
        return self.queue("happy-end")

    @property
    def error_end(self) -> str:
        return self.queue("error-end")


@asynccontextmanager
async def isolated_names(url: str) -> AsyncIterator[AmqpNames]:
    import aiormq  # noqa: PLC0415 - optional dependency of asya-testing

    suffix = uuid.uuid4().hex[:10]
    names = AmqpNames(
        suffix=suffix,
        exchange=f"asya-test-{suffix}",
        events_exchange=f"asya-events-{suffix}",
        control_exchange=f"asya-control-{suffix}",
    )
    try:
        yield names
    finally:
        connection = await aiormq.connect(url)
        try:
            channel = await connection.channel()
            for queue in names.queues:
                await channel.queue_delete(queue)
            await channel.exchange_delete(names.exchange)
            await channel.exchange_delete(names.events_exchange)
            await channel.exchange_delete(names.control_exchange)
            # Retry delay queues expire by themselves (x-expires) once unused.
        finally:
            await connection.close()


class AmqpClient:
    """A test's own broker connection: publish envelopes, read queues, watch events."""

    def __init__(self, url: str, names: AmqpNames) -> None:
        self.url = url
        self.names = names
        self._connection: Any = None
        self._channel: Any = None

    async def __aenter__(self) -> AmqpClient:
        import aiormq  # noqa: PLC0415 - optional dependency of asya-testing

        self._connection = await aiormq.connect(self.url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.exchange_declare(
            self.names.exchange, exchange_type="topic", durable=True
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    async def declare(self, *queues: str) -> None:
        for queue in queues:
            await self._channel.queue_declare(queue, durable=True)
            await self._channel.queue_bind(queue, self.names.exchange, routing_key=queue)

    async def publish(self, routing_key: str, body: bytes | dict[str, Any]) -> None:
        import aiormq  # noqa: PLC0415

        if isinstance(body, dict):
            body = json.dumps(body).encode()
        confirm = await self._channel.basic_publish(
            body,
            exchange=self.names.exchange,
            routing_key=routing_key,
            properties=aiormq.spec.Basic.Properties(delivery_mode=2),
            mandatory=True,
        )
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise RuntimeError(f"publish to {routing_key} not confirmed: {confirm!r}")

    async def publish_control(self, body: bytes) -> None:
        """Publish ``body``, transient as the gateway does, to this test's control exchange (a
        durable fanout, declared here if no sidecar has yet)."""
        await self._channel.exchange_declare(
            self.names.control_exchange, exchange_type="fanout", durable=True
        )
        await self._channel.basic_publish(body, exchange=self.names.control_exchange)

    async def depth(self, queue: str) -> int:
        ok = await self._channel.queue_declare(queue, passive=True)
        return int(ok.message_count)

    async def take(self, queue: str, count: int, *, timeout: float) -> list[dict[str, Any]]:
        """Wait for ``count`` messages on ``queue`` (acking them); fail after ``timeout`` s."""
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < count:
            message = await self._channel.basic_get(queue, no_ack=True)
            if not _empty(message):
                got.append(json.loads(message.body))
                continue
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{queue}: got {len(got)} of {count} messages in {timeout}s")
            await asyncio.sleep(0.05)
        return got

    async def drain(self, queue: str) -> list[dict[str, Any]]:
        """Whatever is on ``queue`` right now."""
        got: list[dict[str, Any]] = []
        while True:
            message = await self._channel.basic_get(queue, no_ack=True)
            if _empty(message):
                return got
            got.append(json.loads(message.body))


def _empty(message: Any) -> bool:
    import aiormq  # noqa: PLC0415

    return isinstance(message.delivery, aiormq.spec.Basic.GetEmpty)
