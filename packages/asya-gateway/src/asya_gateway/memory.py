"""The gateway's broker side on an in-process broker, for a single-process development run.

The in-process broker itself is the sidecars' (``asya_sidecar.MemoryBroker``); the gateway may
not import the sidecar, so it names what it needs of one in :class:`InProcessQueues`, and the
caller passes the broker's "no such queue" exception as ``unroutable``. Messages are read with
the same functions as on RabbitMQ (:mod:`asya_gateway.messages`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Protocol

from asya_protocol import Envelope, encode_envelope

from .errors import PublishFailed
from .jobs import JobStore
from .messages import step_event, terminal_message

__all__ = ["InProcessQueues", "MemoryBroker"]


class InProcessQueues(Protocol):
    """Named queues in this process, and listeners for the sidecars' step events."""

    event_listeners: list[Callable[[str, bytes], None]]

    def declare(self, name: str) -> None: ...

    def queue(self, name: str) -> asyncio.Queue[Any]:
        """The queue of that name; its items have ``body`` (bytes)."""
        ...

    async def publish(self, routing_key: str, body: bytes) -> None: ...


class MemoryBroker:
    """A :class:`~asya_gateway.broker.GatewayBroker` on :class:`InProcessQueues`."""

    def __init__(
        self,
        queues: InProcessQueues,
        store: JobStore,
        *,
        happy_end: str,
        error_end: str,
        unroutable: tuple[type[Exception], ...] = (),
    ) -> None:
        self.queues = queues
        self.store = store
        self.happy_end = happy_end
        self.error_end = error_end
        self.unroutable = unroutable
        self.connected = asyncio.Event()
        self._events: asyncio.Queue[bytes] = asyncio.Queue()
        queues.declare(happy_end)
        queues.declare(error_end)
        queues.event_listeners.append(lambda _key, body: self._events.put_nowait(body))

    @classmethod
    def factory(
        cls,
        queues: InProcessQueues,
        *,
        happy_end: str,
        error_end: str,
        unroutable: tuple[type[Exception], ...] = (),
    ) -> Callable[[JobStore], MemoryBroker]:
        """The ``broker_factory`` of :func:`asya_gateway.create_app` for these queues."""
        return functools.partial(
            cls, queues, happy_end=happy_end, error_end=error_end, unroutable=unroutable
        )

    async def publish_job(self, envelope: Envelope) -> None:
        first = envelope.route.steps[0]
        try:
            await self.queues.publish(first, encode_envelope(envelope))
        except self.unroutable:
            raise PublishFailed(f"no actor consumes the first step {first!r}") from None

    async def consume(self) -> None:
        self.connected.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._terminal(self.happy_end, ok=True))
            tg.create_task(self._terminal(self.error_end, ok=False))
            tg.create_task(self._steps())

    async def _terminal(self, queue: str, *, ok: bool) -> None:
        source = self.queues.queue(queue)
        while True:
            message = await source.get()
            found = terminal_message(message.body, queue)
            if found is not None:
                await self.store.on_terminal(found[0], found[1], ok=ok)

    async def _steps(self) -> None:
        while True:
            found = step_event(await self._events.get())
            if found is not None:
                await self.store.on_steps(found[0], [found[1]])

    async def close(self) -> None:
        self.connected.clear()
