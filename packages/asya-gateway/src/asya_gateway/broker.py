"""The gateway's RabbitMQ side: publish a job's first envelope; consume the terminal queues and
the sidecars' step events to update jobs. Acks follow the database commit, so a crash between
the two means redelivery, which the job state machine treats as a duplicate. A message that can
never be applied goes to a dead-letter queue first (:mod:`asya_gateway.deadletter`); while the
database is down, messages are held for the retry backoff, then redelivered.

:meth:`Broker.consume` is one session: it raises when the connection is lost, and the
supervisor (:mod:`asya_gateway.supervise`) runs it again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import aiormq
import aiormq.abc
from aiormq.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelPreconditionFailed,
    PublishError,
)
from pamqp import commands as spec

from asya_protocol import Backoff, Envelope, StepEvent, encode_envelope

from .deadletter import (
    REASON_HEADER,
    SOURCE_HEADER,
    Settle,
    Verdict,
    after_error,
    dead_letter_queue,
    unknown_job,
    worst,
)
from .errors import DatabaseUnavailable, PublishFailed
from .jobs import JobStore
from .messages import Unusable, step_events, terminal_message
from .ordering import StepEventsFirst
from .settings import GatewaySettings
from .supervise import NO_HEALTH, Health, describe

__all__ = ["Broker", "GatewayBroker", "PublishFailed"]

log = logging.getLogger("asya_gateway.broker")
_BROKER_ERRORS = (AMQPError, ConnectionError, OSError, ChannelInvalidStateError)
EVENT_BATCH_WINDOW = 0.0
"""Seconds a batch of step events waits for more once the first is in: none (one turn of the
loop, so the events already read from the socket come along). Batches grow by themselves under
load, with the events that arrive while the previous batch is being written; the sidecars
batch their own (``ASYA_EVENTS_BATCH_WINDOW``)."""
EVENTS_QUEUE_ARGS = {"x-queue-type": "quorum"}
Delivered = aiormq.abc.DeliveredMessage


def _source_queue(message: Delivered, settings: GatewaySettings) -> str:
    """The queue a delivery came from (a step event's routing key is the sidecar's, not the
    gateway's queue)."""
    key = message.routing_key or ""
    return key if key in (settings.happy_end, settings.error_end) else settings.events_queue


def _closed_reason(connection: Any) -> str:
    closing = connection.closing
    if closing.done() and not closing.cancelled() and closing.exception() is not None:
        return describe(closing.exception())
    return "closed"


class GatewayBroker(Protocol):
    """What the gateway needs of a broker: RabbitMQ (:class:`Broker`) or the in-process one
    (:class:`asya_gateway.memory.MemoryBroker`)."""

    connected: asyncio.Event

    async def publish_job(self, envelope: Envelope) -> None: ...

    async def publish_control(self, body: bytes) -> None:
        """Tell every sidecar (:mod:`asya_protocol.job_control`); best effort, may raise
        :class:`PublishFailed`."""
        ...

    async def consume(self, health: Health = NO_HEALTH) -> None:
        """Consume until cancelled, or raise when it cannot go on (connection lost); it is
        supervised, so run again after a backoff. ``health`` is marked ok once consuming."""
        ...

    async def close(self) -> None: ...


class Broker:
    """RabbitMQ at ``settings.rabbitmq_url``, with the settings' exchanges and queues."""

    def __init__(self, settings: GatewaySettings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self._connection: Any = None
        self._publish: Any = None
        self._lock = asyncio.Lock()
        self._retry = Backoff()  # paces redeliveries while the database is down
        self._dead_queues: set[str] = set()
        self._control_declared = False
        self.connected = asyncio.Event()
        self._batch: list[aiormq.abc.DeliveredMessage] = []
        self._batch_ready = asyncio.Event()
        self._order = StepEventsFirst()

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

    async def publish_control(self, body: bytes) -> None:
        exchange = self.settings.control_exchange
        if not exchange:
            return
        try:
            channel = await self._channel()
            if not self._control_declared:
                await channel.exchange_declare(exchange, exchange_type="fanout", durable=True)
                self._control_declared = True
            await channel.basic_publish(
                body,
                exchange=exchange,
                properties=spec.Basic.Properties(content_type="application/json"),
            )
        except _BROKER_ERRORS as exc:
            self._control_declared = False
            raise PublishFailed(f"RabbitMQ: {exc or type(exc).__name__}") from exc

    async def consume(self, health: Health = NO_HEALTH) -> None:
        """One consuming session: connect, declare, consume until the connection is lost, then
        raise (the supervisor reconnects after its backoff). ``health`` is marked ok once
        consuming."""
        connection = await aiormq.connect(self.settings.rabbitmq_url)
        try:
            await self._declare_events_queue(connection)
            channel = await connection.channel()
            await self._declare(channel)
            await channel.basic_consume(self.settings.happy_end, self._on_happy_end)
            await channel.basic_consume(self.settings.error_end, self._on_error_end)
            await channel.basic_consume(self.settings.events_queue, self._collect_event)
            self.connected.set()
            health.ok()
            flusher = asyncio.create_task(self._flush_events(), name="event-batches")
            try:
                await asyncio.wait([flusher, connection.closing], return_when="FIRST_COMPLETED")
            finally:
                flusher.cancel()
                await asyncio.wait([flusher])
            failed = None if flusher.cancelled() else flusher.exception()
            if failed is not None:
                raise ConnectionError(f"event batches: {describe(failed)}")
            raise ConnectionError(f"RabbitMQ connection lost: {_closed_reason(connection)}")
        finally:
            self.connected.clear()
            self._batch.clear()
            self._order.reset()
            with contextlib.suppress(*_BROKER_ERRORS):
                await connection.close()

    async def _declare(self, channel: Any) -> None:
        s = self.settings
        await channel.basic_qos(prefetch_count=32)
        await channel.exchange_declare(s.exchange, exchange_type="topic", durable=True)
        await channel.exchange_declare(s.events_exchange, exchange_type="topic", durable=True)
        for queue in (s.happy_end, s.error_end):
            await channel.queue_declare(queue, durable=True)
            await channel.queue_bind(queue, s.exchange, routing_key=queue)
        await channel.queue_declare(s.events_queue, passive=True)  # see _declare_events_queue
        await channel.queue_bind(s.events_queue, s.events_exchange, routing_key="#")

    async def _declare_events_queue(self, connection: Any) -> None:
        """A quorum queue keeps every message on disk, also the sidecars' transient step events
        (a broker restart loses none in the queue). One that an older gateway declared classic
        is refused by the broker with other arguments (406): it is used as it is, with a
        warning, rather than leaving the gateway unready after an upgrade."""
        name = self.settings.events_queue
        probe = await connection.channel()  # a 406 closes the channel it happens on
        try:
            await probe.queue_declare(name, durable=True, arguments=EVENTS_QUEUE_ARGS)
        except ChannelPreconditionFailed as exc:
            log.warning(
                "events queue %r exists with other arguments (%s); using it as it is. Events "
                "in a classic queue do not survive a broker restart: delete it once "
                "(rabbitmqctl delete_queue %s) to have it declared as a quorum queue",
                name,
                exc,
                name,
            )
        else:
            with contextlib.suppress(*_BROKER_ERRORS):
                await probe.close()

    async def _on_happy_end(self, message: aiormq.abc.DeliveredMessage) -> None:
        await self._handle(self.settings.happy_end, message, ok=True)

    async def _on_error_end(self, message: aiormq.abc.DeliveredMessage) -> None:
        await self._handle(self.settings.error_end, message, ok=False)

    async def _collect_event(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Step events are applied in batches (one transaction per job per batch), acked after."""
        self._batch.append(message)
        self._order.receive()
        self._batch_ready.set()

    async def _flush_events(self) -> None:
        while True:
            await self._batch_ready.wait()
            await asyncio.sleep(EVENT_BATCH_WINDOW)
            self._batch_ready.clear()
            batch, self._batch = self._batch, []
            # A message may hold several events (a sidecar's batch), of several jobs: each job's
            # events are applied in one transaction, each message settled once, by its worst.
            by_job: dict[str, list[tuple[StepEvent, int]]] = {}
            verdicts: list[list[Verdict]] = [[] for _ in batch]
            for i, message in enumerate(batch):
                found = step_events(message.body)
                if isinstance(found, Unusable):
                    verdicts[i].append(Verdict(Settle.DEAD, found.reason))
                    continue
                for job_id, event in found:
                    by_job.setdefault(job_id, []).append((event, i))
            for job_id, items in by_job.items():
                verdict = await self._apply_steps(job_id, items, batch)
                for _, i in items:
                    verdicts[i].append(verdict[i])
            settled = [worst(v) for v in verdicts]
            await self._pace(settled)
            for message, each in zip(batch, settled, strict=True):
                await self._settle(message, each)
            self._order.apply(len(batch))

    async def _apply_steps(
        self, job_id: str, items: list[tuple[StepEvent, int]], batch: list[Delivered]
    ) -> dict[int, Verdict]:
        """Apply one job's events (in order) in one transaction; the verdict per message."""
        try:
            known = await self.store.on_steps(job_id, [event for event, _ in items])
        except Exception as exc:  # noqa: BLE001 - logged and settled by _after_error
            what = f"step events of job {job_id}"
            return {i: self._after_error(exc, batch[i], what) for _, i in items}
        self._retry.reset()
        verdict = Verdict(Settle.ACK) if known else unknown_job(job_id)
        return {i: verdict for _, i in items}

    async def _handle(self, queue: str, message: Delivered, *, ok: bool) -> None:
        await self._order.caught_up()  # the step events received before it first (partials)
        found = terminal_message(message.body)
        if isinstance(found, Unusable):
            verdict = Verdict(Settle.DEAD, found.reason)
        else:
            job_id, envelope = found
            try:
                known = await self.store.on_terminal(job_id, envelope, ok=ok)
            except Exception as exc:  # noqa: BLE001 - logged and settled by _after_error
                verdict = self._after_error(exc, message, f"a message in {queue}")
            else:
                self._retry.reset()
                verdict = Verdict(Settle.ACK) if known else unknown_job(job_id)
        await self._pace([verdict])
        await self._settle(message, verdict)

    def _after_error(self, exc: Exception, message: Delivered, what: str) -> Verdict:
        verdict = after_error(exc, redelivered=bool(message.redelivered))
        if isinstance(exc, DatabaseUnavailable):
            if self._retry.attempts == 0:  # once per outage, not once per message
                log.warning("%s: %s; messages come back until it answers", what, exc)
        else:
            log.error("applying %s failed (%s)", what, verdict.settle, exc_info=exc)
        return verdict

    async def _pace(self, verdicts: list[Verdict]) -> None:
        """Before a redelivery, wait the retry backoff: no busy loop while the database is
        down (the messages are held, unacked, meanwhile)."""
        if any(v.settle is Settle.RETRY for v in verdicts):
            await self._retry.sleep()

    async def _settle(self, message: Delivered, verdict: Verdict) -> None:
        """Carry out a verdict. A dead letter is confirmed before the source is acked; if it
        cannot be published the message is not acked and comes back. A lost channel means
        the broker redelivers the message; the store ignores duplicates."""
        tag = message.delivery_tag or 0
        source = _source_queue(message, self.settings)
        ack = verdict.settle is not Settle.RETRY
        if verdict.settle is Settle.DEAD:
            try:
                await self._dead_letter(message, verdict.reason)
            except (PublishFailed, *_BROKER_ERRORS) as exc:
                log.warning("cannot dead-letter a message from %s (%s): it comes back", source, exc)
                ack = False
        with contextlib.suppress(*_BROKER_ERRORS):
            if ack:
                await message.channel.basic_ack(tag)
            else:
                await message.channel.basic_nack(tag, requeue=True)

    async def _dead_letter(self, message: Delivered, reason: str) -> None:
        source = _source_queue(message, self.settings)
        target = dead_letter_queue(source)
        properties = message.header.properties
        headers = {**(properties.headers or {}), REASON_HEADER: reason, SOURCE_HEADER: source}
        channel = await self._channel()
        if target not in self._dead_queues:  # declared when first needed: durable
            await channel.queue_declare(target, durable=True)
            self._dead_queues.add(target)
        try:
            confirm = await channel.basic_publish(
                message.body,
                exchange="",  # the default exchange: straight to the queue of that name
                routing_key=target,
                properties=spec.Basic.Properties(
                    delivery_mode=2,
                    content_type=properties.content_type,
                    correlation_id=properties.correlation_id,
                    message_id=properties.message_id,
                    headers=headers,
                ),
                mandatory=True,
            )
        except PublishError:
            self._dead_queues.discard(target)  # deleted meanwhile: declared again next time
            raise PublishFailed(f"no dead-letter queue {target}") from None
        if not isinstance(confirm, spec.Basic.Ack):
            raise PublishFailed(f"RabbitMQ did not confirm the dead letter to {target}")
        log.warning("dead-lettered a message from %s to %s: %s", source, target, reason)

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS):
                await self._connection.close()
        self._connection = None
