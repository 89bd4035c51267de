"""The gateway's RabbitMQ side: publish a job's first envelope; consume the terminal queues and
the sidecars' step events to update jobs. Acks follow the database commit, so a crash between
the two means redelivery, which the job state machine treats as a duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import aiormq
import aiormq.abc
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, PublishError
from pamqp import commands as spec

from asya_protocol import Backoff, Envelope, StepEvent, encode_envelope

from .errors import PublishFailed
from .jobs import JobStore
from .messages import step_event, terminal_message
from .settings import GatewaySettings

__all__ = ["Broker", "GatewayBroker", "PublishFailed"]

log = logging.getLogger("asya_gateway.broker")
_BROKER_ERRORS = (AMQPError, ConnectionError, OSError, ChannelInvalidStateError)
EVENT_BATCH_WINDOW = 0.01


class GatewayBroker(Protocol):
    """What the gateway needs of a broker: RabbitMQ (:class:`Broker`) or the in-process one
    (:class:`asya_gateway.memory.MemoryBroker`)."""

    connected: asyncio.Event

    async def publish_job(self, envelope: Envelope) -> None: ...

    async def consume(self) -> None: ...

    async def close(self) -> None: ...


class Broker:
    """RabbitMQ at ``settings.rabbitmq_url``, with the settings' exchanges and queues."""

    def __init__(self, settings: GatewaySettings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self._connection: Any = None
        self._publish: Any = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff()
        self.connected = asyncio.Event()
        self._batch: list[aiormq.abc.DeliveredMessage] = []
        self._batch_ready = asyncio.Event()

    async def _channel(self) -> Any:
        async with self._lock:
            if self._publish is None or self._publish.is_closed:
                if self._connection is None or self._connection.is_closed:
                    self._connection = await aiormq.connect(self.settings.rabbitmq_url)
                self._publish = await self._connection.channel(publisher_confirms=True)
            return self._publish

    async def publish_job(self, envelope: Envelope) -> None:
        first = envelope.route.steps[0]
        try:
            channel = await self._channel()
            confirm = await channel.basic_publish(
                encode_envelope(envelope),
                exchange=self.settings.exchange,
                routing_key=first,
                properties=spec.Basic.Properties(
                    delivery_mode=2, content_type="application/json", correlation_id=envelope.id
                ),
                mandatory=True,
            )
        except PublishError:
            raise PublishFailed(f"no queue is bound to the first step {first!r}") from None
        except _BROKER_ERRORS as exc:
            raise PublishFailed(f"RabbitMQ: {exc or type(exc).__name__}") from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise PublishFailed("RabbitMQ did not confirm the publish")

    async def consume(self) -> None:
        """Consume until cancelled, reconnecting with the protocol's backoff (reset once
        consuming again)."""
        while True:
            try:
                await self._consume_once()
            except _BROKER_ERRORS as exc:
                log.warning("RabbitMQ consumer: %s; reconnecting", exc)
            self.connected.clear()
            await self._backoff.sleep()

    async def _declare(self, channel: Any) -> None:
        s = self.settings
        await channel.basic_qos(prefetch_count=32)
        await channel.exchange_declare(s.exchange, exchange_type="topic", durable=True)
        await channel.exchange_declare(s.events_exchange, exchange_type="topic", durable=True)
        for queue in (s.happy_end, s.error_end):
            await channel.queue_declare(queue, durable=True)
            await channel.queue_bind(queue, s.exchange, routing_key=queue)
        await channel.queue_declare(s.events_queue, durable=True)
        await channel.queue_bind(s.events_queue, s.events_exchange, routing_key="#")

    async def _consume_once(self) -> None:
        connection = await aiormq.connect(self.settings.rabbitmq_url)
        try:
            channel = await connection.channel()
            await self._declare(channel)
            await channel.basic_consume(self.settings.happy_end, self._on_happy_end)
            await channel.basic_consume(self.settings.error_end, self._on_error_end)
            await channel.basic_consume(self.settings.events_queue, self._collect_event)
            self.connected.set()
            self._backoff.reset()
            async with asyncio.TaskGroup() as tg:
                flusher = tg.create_task(self._flush_events(channel), name="event-batches")
                await connection.closing
                flusher.cancel()
        finally:
            self.connected.clear()
            self._batch.clear()
            with contextlib.suppress(*_BROKER_ERRORS):
                await connection.close()

    async def _on_happy_end(self, message: aiormq.abc.DeliveredMessage) -> None:
        await self._handle(self.settings.happy_end, message, ok=True)

    async def _on_error_end(self, message: aiormq.abc.DeliveredMessage) -> None:
        await self._handle(self.settings.error_end, message, ok=False)

    async def _collect_event(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Step events are applied in batches (one transaction per job per batch), acked after."""
        self._batch.append(message)
        self._batch_ready.set()

    async def _flush_events(self, channel: Any) -> None:
        while True:
            await self._batch_ready.wait()
            await asyncio.sleep(EVENT_BATCH_WINDOW)  # let a step's few events arrive together
            self._batch_ready.clear()
            batch, self._batch = self._batch, []
            for job_id, items in (await self._by_job(channel, batch)).items():
                await self._apply_steps(channel, job_id, items)

    async def _by_job(
        self, channel: Any, batch: list[aiormq.abc.DeliveredMessage]
    ) -> dict[str, list[tuple[StepEvent, int]]]:
        """The batch's step events by job; others (unreadable, not a job's) are acked now."""
        by_job: dict[str, list[tuple[StepEvent, int]]] = {}
        for message in batch:
            tag = message.delivery_tag or 0
            found = step_event(message.body)
            if found is None:
                await self._settle(channel, tag, ack=True)
                continue
            job_id, event = found
            by_job.setdefault(job_id, []).append((event, tag))
        return by_job

    async def _apply_steps(
        self, channel: Any, job_id: str, items: list[tuple[StepEvent, int]]
    ) -> None:
        try:
            await self.store.on_steps(job_id, [event for event, _ in items])
        except Exception:
            log.exception("applying step events of job %s failed; they come back", job_id)
            ack = False
        else:
            ack = True
        for _, tag in items:
            await self._settle(channel, tag, ack=ack)

    @staticmethod
    async def _settle(channel: Any, tag: int, *, ack: bool) -> None:
        # A lost channel means the broker redelivers these; the store ignores duplicates.
        with contextlib.suppress(*_BROKER_ERRORS):
            if ack:
                await channel.basic_ack(tag)
            else:
                await channel.basic_nack(tag, requeue=True)

    async def _handle(self, queue: str, message: aiormq.abc.DeliveredMessage, *, ok: bool) -> None:
        tag = message.delivery_tag or 0
        found = terminal_message(message.body, queue)
        try:
            if found is not None:
                await self.store.on_terminal(found[0], found[1], ok=ok)
        except Exception:
            log.exception("updating a job from a message in %s failed; it comes back", queue)
            await self._settle(message.channel, tag, ack=False)
            return
        await self._settle(message.channel, tag, ack=True)

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS):
                await self._connection.close()
        self._connection = None
