"""RabbitMQ through aiormq: a durable topic exchange, durable queues, confirms, mandatory
publishes, per-delay retry queues that dead-letter back to the actor's queue, and (when set) an
exclusive queue on the control fanout exchange, where the gateway announces cancelled jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiormq
import aiormq.abc
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, PublishError
from pamqp import commands as spec
from pamqp.common import FieldValue

from asya_protocol import BATCH_KEY, encode_event_batch

from ..decision import REDELIVERY_HEADER, Outgoing
from ..errors import TransportError, Unroutable
from ..retries import retry_bucket
from .base import ControlHandler

__all__ = ["AmqpDelivery", "AmqpTransport", "declare_step_queue"]

log = logging.getLogger("asya_sidecar.amqp")

PERSISTENT = 2
# What aiormq raises when the broker or the connection fails (a closed channel is a RuntimeError).
BROKER_ERRORS = (AMQPError, ConnectionError, ChannelInvalidStateError)


async def declare_step_queue(channel: aiormq.abc.AbstractChannel, exchange: str, name: str) -> None:
    """A durable queue named ``name``, bound to ``exchange`` with routing key ``name``."""
    await channel.queue_declare(name, durable=True)
    await channel.queue_bind(name, exchange, routing_key=name)


_EVENT_PROPERTIES = spec.Basic.Properties(content_type="application/json")

MAX_BATCH_EVENTS = 256
MAX_BATCH_BYTES = 256 * 1024


class _EventBatch:
    """Advisory step events published together, at most one message per ``window`` seconds:
    after a quiet window the next events go at the end of the event loop's turn (no wait),
    while they keep coming they wait for the window's end. So a loaded sidecar publishes one
    message (a JSON array, in order) for many events, and a quiet one adds no latency. With a
    window of 0: the events of each turn together. One event alone goes as itself, with its own
    routing key. Published by a task of their own: the delivery that produced an event never
    waits for its publish. At most :data:`MAX_BATCH_EVENTS` events or :data:`MAX_BATCH_BYTES`
    per message; a full batch goes at once."""

    def __init__(
        self, publish: Callable[[str, bytes], Awaitable[None]], *, key: str, window: float
    ) -> None:
        self._publish = publish
        self.key = key
        self.window = window
        self._events: list[tuple[str, bytes]] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last = -float("inf")
        """When the last message went (the loop's clock)."""

    def add(self, routing_key: str, body: bytes) -> None:
        self._events.append((routing_key, body))
        self._size += len(body)
        if len(self._events) >= MAX_BATCH_EVENTS or self._size >= MAX_BATCH_BYTES:
            self._send()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            wait = self._last + self.window - loop.time()
            if wait > 0:
                self._timer = loop.call_later(wait, self._send)
            else:
                self._timer = loop.call_soon(self._send)

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._events:
            return
        events, self._events, self._size = self._events, [], 0
        self._last = asyncio.get_running_loop().time()
        if len(events) == 1:
            key, body = events[0]
        else:
            key, body = self.key, encode_event_batch([body for _, body in events])
        task = asyncio.ensure_future(self._publish(key, body))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("publishing step events failed", exc_info=task.exception())

    async def flush(self) -> None:
        """Publish what is held now and wait for every publish under way."""
        self._send()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class AmqpDelivery:
    def __init__(self, channel: aiormq.abc.AbstractChannel, message: aiormq.abc.DeliveredMessage):
        self._channel = channel
        if message.delivery_tag is None:  # pragma: no cover - basic.deliver always has one
            raise TransportError("delivery without a delivery tag")
        self._tag: int = message.delivery_tag
        self.body = message.body
        self.redelivered = bool(message.redelivered)
        headers = message.header.properties.headers or {}
        count = headers.get(REDELIVERY_HEADER, 0)
        self.redeliveries = count if isinstance(count, int) and count > 0 else 0

    async def ack(self) -> None:
        try:
            await self._channel.basic_ack(self._tag)
        except BROKER_ERRORS as exc:
            raise TransportError(f"ack failed: {exc}") from exc

    async def nack(self) -> None:
        try:
            await self._channel.basic_nack(self._tag, requeue=True)
        except BROKER_ERRORS as exc:
            raise TransportError(f"nack failed: {exc}") from exc


class AmqpTransport:
    """One connection, a consuming channel and a confirming publish channel."""

    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        queue: str,
        terminal: tuple[str, ...],
        prefetch: int,
        events_exchange: str = "",
        events_batch_window: float | None = None,
        control_exchange: str = "",
        on_control: ControlHandler | None = None,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.queue = queue
        self.terminal = terminal
        self.prefetch = prefetch
        self.events_exchange = events_exchange
        self.control_exchange = control_exchange if on_control is not None else ""
        self._on_control = on_control
        self.control_queue: str | None = None
        """The server-named queue bound to the control exchange, once :meth:`setup` made it."""
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._consume_channel: aiormq.abc.AbstractChannel | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        self._events_channel: aiormq.abc.AbstractChannel | None = None
        self._control_channel: aiormq.abc.AbstractChannel | None = None
        self._inbox: asyncio.Queue[AmqpDelivery | None] = asyncio.Queue()
        self._batch = (
            None
            if events_batch_window is None
            else _EventBatch(
                self._publish_events, key=f"{queue}.{BATCH_KEY}", window=events_batch_window
            )
        )
        self._consumer_tag: str | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    @property
    def control_listening(self) -> bool:
        return self.control_queue is not None and self.connected

    async def connect(self) -> None:
        try:
            self._connection = await aiormq.connect(self.url)
            self._consume_channel = await self._connection.channel()
            self._publish_channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            if self.events_exchange:
                self._events_channel = await self._connection.channel(publisher_confirms=False)
            if self.control_exchange:
                self._control_channel = await self._connection.channel(publisher_confirms=False)
        except (*BROKER_ERRORS, OSError) as exc:
            await self.close()
            raise TransportError(f"cannot connect to RabbitMQ: {exc}") from exc

    async def setup(self) -> None:
        channel = self._publish_channel
        if channel is None:
            raise TransportError("not connected")
        try:
            await channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            for name in (self.queue, *self.terminal):
                await declare_step_queue(channel, self.exchange, name)
            if self.events_exchange:
                await channel.exchange_declare(
                    self.events_exchange, exchange_type="topic", durable=True
                )
        except BROKER_ERRORS as exc:
            raise TransportError(f"declaring exchange and queues failed: {exc}") from exc
        await self._listen_for_control()

    async def _listen_for_control(self) -> None:
        """Bind an exclusive, auto-delete, server-named queue to the control fanout exchange and
        consume it without acks (control messages are advisory): gone with the connection,
        made anew by the next session's setup."""
        channel, on_control = self._control_channel, self._on_control
        if not self.control_exchange or channel is None or on_control is None:
            return

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            on_control(message.body)

        try:
            await channel.exchange_declare(
                self.control_exchange, exchange_type="fanout", durable=True
            )
            ok = await channel.queue_declare("", exclusive=True, auto_delete=True)
            queue = ok.queue
            if not queue:  # pragma: no cover - the broker always names it
                raise TransportError("the broker did not name the control queue")
            await channel.queue_bind(queue, self.control_exchange, routing_key="")
            await channel.basic_consume(queue, on_message, no_ack=True)
        except BROKER_ERRORS as exc:
            raise TransportError(
                f"listening on the control exchange {self.control_exchange!r} failed: {exc}"
            ) from exc
        self.control_queue = queue

    async def closing(self) -> None:
        """Returns (or raises) when the connection is lost."""
        if self._connection is None:
            return
        try:
            await self._connection.closing
        except Exception as exc:  # noqa: BLE001 - any reason means "lost"; the caller reconnects
            log.warning("RabbitMQ connection closed: %s", exc)

    async def deliveries(self) -> AsyncIterator[AmqpDelivery]:
        channel = self._consume_channel
        if channel is None:
            raise TransportError("not connected")

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            self._inbox.put_nowait(AmqpDelivery(channel, message))

        try:
            await channel.basic_qos(prefetch_count=self.prefetch)
            ok = await channel.basic_consume(self.queue, on_message)
        except BROKER_ERRORS as exc:
            raise TransportError(f"cannot consume {self.queue!r}: {exc}") from exc
        self._consumer_tag = ok.consumer_tag
        closing = asyncio.ensure_future(self.closing())
        try:
            while (delivery := await self._next(closing)) is not None:
                yield delivery
        finally:
            if not closing.done():
                closing.cancel()
            await asyncio.gather(closing, return_exceptions=True)

    async def _next(self, closing: asyncio.Future[None]) -> AmqpDelivery | None:
        """The next delivery (None once consuming stopped), or :class:`TransportError` once the
        connection is lost. One already waiting, the usual case under load, is taken as is:
        no task, no wait."""
        if closing.done():
            raise TransportError("connection to RabbitMQ lost")
        if not self._inbox.empty():
            return self._inbox.get_nowait()
        get = asyncio.ensure_future(self._inbox.get())
        waiting: set[asyncio.Future[Any]] = {get, closing}
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()
        if get not in done:
            raise TransportError("connection to RabbitMQ lost")
        return get.result()

    async def stop_consuming(self) -> None:
        """Stop new deliveries; those already received are still handed out."""
        if self._consume_channel is not None and self._consumer_tag and self.connected:
            with contextlib.suppress(*BROKER_ERRORS):
                await self._consume_channel.basic_cancel(self._consumer_tag)
        self._inbox.put_nowait(None)

    async def publish(self, out: Outgoing) -> None:
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            raise TransportError("publish channel is closed")
        headers: dict[str, FieldValue] | None = (
            {REDELIVERY_HEADER: out.redeliveries} if out.redeliveries else None
        )
        properties = spec.Basic.Properties(
            delivery_mode=PERSISTENT,
            content_type="application/json",
            correlation_id=out.envelope_id,
            headers=headers,
        )
        exchange, routing_key = self.exchange, out.routing_key
        if out.delay_ms is not None:
            await self._declare_delay_queue(channel, out.routing_key, out.delay_ms)
            exchange = ""  # the default exchange routes by queue name
            properties.expiration = str(out.delay_ms)
        try:
            confirm = await channel.basic_publish(
                out.body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
            )
        except PublishError as exc:
            raise Unroutable(routing_key) from exc
        except BROKER_ERRORS as exc:
            raise TransportError(f"publish to {routing_key!r} failed: {exc}") from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise TransportError(f"broker did not confirm the publish to {routing_key!r}")

    async def _declare_delay_queue(
        self, channel: aiormq.abc.AbstractChannel, name: str, delay_ms: int
    ) -> None:
        bucket = retry_bucket(delay_ms)
        try:
            await channel.queue_declare(
                name,
                durable=True,
                arguments={
                    "x-dead-letter-exchange": self.exchange,
                    "x-dead-letter-routing-key": self.queue,
                    # Removed when unused for long after its longest delay, never while it may
                    # still hold a message (every publish redeclares it and resets the timer).
                    "x-expires": 2 * bucket + 600_000,
                },
            )
        except BROKER_ERRORS as exc:
            raise TransportError(f"declaring delay queue {name!r} failed: {exc}") from exc

    async def publish_event(
        self, routing_key: str, body: bytes, *, confirmed: bool = False
    ) -> None:
        if confirmed:
            await self._publish_event_confirmed(routing_key, body)
            return
        if self._batch is not None:
            self._batch.add(routing_key, body)
            return
        await self._publish_events(routing_key, body)

    async def _publish_events(self, routing_key: str, body: bytes) -> None:
        """Publish advisory events (one, or a batch): no confirm, a failure only logged."""
        channel = self._events_channel
        if channel is None or channel.is_closed:
            return
        with contextlib.suppress(*BROKER_ERRORS):  # events are advisory
            await channel.basic_publish(
                body,
                exchange=self.events_exchange,
                routing_key=routing_key,
                properties=_EVENT_PROPERTIES,
            )

    async def _publish_event_confirmed(self, routing_key: str, body: bytes) -> None:
        """An event a consumer needs to finish its work (a fan-out's children): persistent, on
        the confirmed channel, so that it is not lost with the broker before the input's ack."""
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            raise TransportError("publish channel is closed")
        properties = spec.Basic.Properties(
            delivery_mode=PERSISTENT, content_type="application/json"
        )
        try:
            confirm = await channel.basic_publish(
                body, exchange=self.events_exchange, routing_key=routing_key, properties=properties
            )
        except BROKER_ERRORS as exc:
            raise TransportError(f"publishing the event {routing_key!r} failed: {exc}") from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise TransportError(f"broker did not confirm the event {routing_key!r}")

    async def close(self) -> None:
        if self._batch is not None:
            await self._batch.flush()  # the events held: out before the connection goes
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*BROKER_ERRORS, OSError):
                await connection.close()
