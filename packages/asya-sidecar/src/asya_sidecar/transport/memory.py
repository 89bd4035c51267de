"""An in-process broker for single-process development runs and tests.

It keeps the semantics the consumer relies on: named queues bound by name, mandatory publishes
that fail when no queue is bound, per-delivery ack/nack with redelivery, prefetch, and delayed
publishes for retries. Nothing survives the process: it is not a production transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..decision import Outgoing
from ..errors import TransportError, Unroutable
from .base import ControlHandler

__all__ = ["MemoryBroker", "MemoryDelivery", "MemoryTransport"]


@dataclass
class _Message:
    body: bytes
    redeliveries: int = 0
    redelivered: bool = False


class MemoryBroker:
    """Queues by name. Publishing to a name with no declared queue raises :class:`Unroutable`."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[_Message]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self.event_listeners: list[Callable[[str, bytes], None]] = []
        self.control_listeners: list[ControlHandler] = []
        """The handlers of the transports that listen for control messages."""

    def declare(self, name: str) -> None:
        self._queues.setdefault(name, asyncio.Queue())

    def queue(self, name: str) -> asyncio.Queue[_Message]:
        try:
            return self._queues[name]
        except KeyError:
            raise Unroutable(name) from None

    def depth(self, name: str) -> int:
        return self.queue(name).qsize()

    async def publish(self, routing_key: str, body: bytes, *, redeliveries: int = 0) -> None:
        self.queue(routing_key).put_nowait(_Message(body, redeliveries))

    def requeue(self, name: str, message: _Message) -> None:
        message.redelivered = True
        self.queue(name).put_nowait(message)

    def publish_later(self, routing_key: str, body: bytes, delay: float) -> None:
        queue = self.queue(routing_key)

        def fire() -> None:
            self._timers.discard(handle)
            queue.put_nowait(_Message(body))

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    async def get(self, name: str, *, timeout: float) -> bytes:
        """Take one message body from a queue (as a consumer that acks at once would)."""
        async with asyncio.timeout(timeout):
            return (await self.queue(name).get()).body

    def emit_event(self, routing_key: str, body: bytes) -> None:
        for listener in self.event_listeners:
            listener(routing_key, body)

    async def publish_control(self, body: bytes) -> None:
        """A control message (an encoded :class:`~asya_protocol.JobControl`), as the gateway
        publishes to the control exchange: every listening transport's handler gets it now."""
        for listener in list(self.control_listeners):
            listener(body)

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()


class MemoryDelivery:
    def __init__(self, transport: MemoryTransport, message: _Message) -> None:
        self._transport = transport
        self._message = message
        self.body = message.body
        self.redelivered = message.redelivered
        self.redeliveries = message.redeliveries
        self._settled = False

    async def ack(self) -> None:
        self._settle()

    async def nack(self) -> None:
        self._settle()
        self._transport.broker.requeue(self._transport.queue, self._message)

    def _settle(self) -> None:
        if self._settled:
            raise TransportError("delivery already settled")
        self._settled = True
        self._transport._window.release()


class MemoryTransport:
    def __init__(
        self,
        broker: MemoryBroker,
        *,
        queue: str,
        terminal: tuple[str, ...],
        prefetch: int,
        on_control: ControlHandler | None = None,
    ) -> None:
        self.broker = broker
        self._on_control = on_control
        self._listening = False
        self.queue = queue
        self._terminal = terminal
        self._window = asyncio.Semaphore(prefetch)
        self._stopped = asyncio.Event()

    @property
    def connected(self) -> bool:
        return True

    @property
    def control_listening(self) -> bool:
        return self._listening

    async def connect(self) -> None:
        """Nothing to connect to: the broker lives in this process."""

    async def setup(self) -> None:
        for name in (self.queue, *self._terminal):
            self.broker.declare(name)
        if self._on_control is not None and not self._listening:
            self.broker.control_listeners.append(self._on_control)
            self._listening = True

    async def deliveries(self) -> AsyncIterator[MemoryDelivery]:
        queue = self.broker.queue(self.queue)
        while not self._stopped.is_set():
            await self._window.acquire()
            get = asyncio.ensure_future(queue.get())
            stop = asyncio.ensure_future(self._stopped.wait())
            try:
                done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not get.done():
                    get.cancel()
                await asyncio.gather(get, stop, return_exceptions=True)
            if get not in done or get.cancelled():
                self._window.release()
                return
            yield MemoryDelivery(self, get.result())

    async def stop_consuming(self) -> None:
        self._stopped.set()

    async def publish(self, out: Outgoing) -> None:
        if out.delay_ms is not None:
            # A retry: wait in memory, then come back to this actor's queue.
            self.broker.publish_later(self.queue, out.body, out.delay_ms / 1000)
            return
        await self.broker.publish(out.routing_key, out.body, redeliveries=out.redeliveries or 0)

    async def publish_event(
        self, routing_key: str, body: bytes, *, confirmed: bool = False
    ) -> None:
        self.broker.emit_event(routing_key, body)

    async def close(self) -> None:
        self._stopped.set()
        if self._listening and self._on_control is not None:
            self.broker.control_listeners.remove(self._on_control)
            self._listening = False
