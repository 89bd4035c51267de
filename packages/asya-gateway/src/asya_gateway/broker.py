"""The gateway's RabbitMQ side: publish a job's first envelope; consume the terminal queues and
the sidecars' step events to update jobs. Acks follow the database commit, so a crash between
the two means redelivery, which the job store treats as a duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

import aiormq
import aiormq.abc
import msgspec
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, PublishError
from pamqp import commands as spec

from asya_protocol import decode_event

from .jobs import JOB_HEADER, JobStore

__all__ = ["Broker", "GatewayBroker", "PublishFailed"]

log = logging.getLogger("asya_gateway.broker")
_BROKER_ERRORS = (AMQPError, ConnectionError, OSError, ChannelInvalidStateError)
EVENT_BATCH_WINDOW = 0.01


class PublishFailed(Exception):
    """The first envelope could not be delivered (no queue for the first step, broker down)."""


class GatewayBroker(Protocol):
    """What the gateway needs of a broker: RabbitMQ (:class:`Broker`) or an in-process one."""

    connected: asyncio.Event

    async def publish_job(self, envelope: dict[str, Any]) -> None: ...

    async def consume(self) -> None: ...

    async def close(self) -> None: ...


class Broker:
    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        events_exchange: str,
        happy_end: str,
        error_end: str,
        events_queue: str,
        store: JobStore,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.events_exchange = events_exchange
        self.happy_end = happy_end
        self.error_end = error_end
        self.events_queue = events_queue
        self.store = store
        self._connection: Any = None
        self._publish: Any = None
        self._lock = asyncio.Lock()
        self.connected = asyncio.Event()
        self._batch: list[aiormq.abc.DeliveredMessage] = []
        self._batch_ready = asyncio.Event()

    async def _channel(self) -> Any:
        async with self._lock:
            if self._publish is None or self._publish.is_closed:
                if self._connection is None or self._connection.is_closed:
                    self._connection = await aiormq.connect(self.url)
                self._publish = await self._connection.channel(publisher_confirms=True)
            return self._publish

    async def publish_job(self, envelope: dict[str, Any]) -> None:
        first = envelope["route"]["steps"][0]
        try:
            channel = await self._channel()
            confirm = await channel.basic_publish(
                json.dumps(envelope).encode(),
                exchange=self.exchange,
                routing_key=first,
                properties=spec.Basic.Properties(
                    delivery_mode=2, content_type="application/json", correlation_id=envelope["id"]
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
        """Consume until cancelled, reconnecting with backoff."""
        delay = 0.5
        while True:
            try:
                await self._consume_once()
            except _BROKER_ERRORS as exc:
                log.warning("RabbitMQ consumer: %s; reconnecting in %.1fs", exc, delay)
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _consume_once(self) -> None:
        connection = await aiormq.connect(self.url)
        try:
            channel = await connection.channel()
            await channel.basic_qos(prefetch_count=32)
            await channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            await channel.exchange_declare(
                self.events_exchange, exchange_type="topic", durable=True
            )
            for queue in (self.happy_end, self.error_end):
                await channel.queue_declare(queue, durable=True)
                await channel.queue_bind(queue, self.exchange, routing_key=queue)
            await channel.queue_declare(self.events_queue, durable=True)
            await channel.queue_bind(self.events_queue, self.events_exchange, routing_key="#")

            def handler(kind: str) -> Any:
                async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
                    await self._handle(kind, message)

                return on_message

            await channel.basic_consume(self.happy_end, handler("ok"))
            await channel.basic_consume(self.error_end, handler("error"))
            await channel.basic_consume(self.events_queue, self._collect_event)
            self.connected.set()
            async with asyncio.TaskGroup() as tg:
                flusher = tg.create_task(self._flush_events(channel), name="event-batches")
                await connection.closing
                flusher.cancel()
        finally:
            self.connected.clear()
            self._batch.clear()
            with contextlib.suppress(*_BROKER_ERRORS):
                await connection.close()

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
            by_job: dict[str, list[tuple[Any, int]]] = {}
            for message in batch:
                tag = message.delivery_tag or 0
                try:
                    event = decode_event(message.body)
                except (ValueError, msgspec.DecodeError) as exc:
                    log.warning("ignoring an unreadable step event: %s", exc)
                    await self._settle(channel, tag, ack=True)
                    continue
                job_id = event.headers.get(JOB_HEADER)
                if not job_id:
                    await self._settle(channel, tag, ack=True)  # not a gateway job
                    continue
                by_job.setdefault(job_id, []).append((event, tag))
            for job_id, items in by_job.items():
                try:
                    await self.store.on_steps(job_id, [event for event, _ in items])
                except Exception:
                    log.exception("applying step events of job %s failed; they come back", job_id)
                    for _, tag in items:
                        await self._settle(channel, tag, ack=False)
                    continue
                for _, tag in items:
                    await self._settle(channel, tag, ack=True)

    @staticmethod
    async def _settle(channel: Any, tag: int, *, ack: bool) -> None:
        # A lost channel means the broker redelivers these; the store ignores duplicates.
        with contextlib.suppress(*_BROKER_ERRORS):
            if ack:
                await channel.basic_ack(tag)
            else:
                await channel.basic_nack(tag, requeue=True)

    async def _handle(self, kind: str, message: aiormq.abc.DeliveredMessage) -> None:
        channel = message.channel
        tag = message.delivery_tag or 0
        try:
            envelope = json.loads(message.body)
            job_id = (envelope.get("headers") or {}).get(JOB_HEADER)
            if job_id:
                await self.store.on_terminal(job_id, envelope, ok=kind == "ok")
        except (ValueError, TypeError, KeyError, msgspec.DecodeError) as exc:
            # Not ours to understand (another client's message, or malformed): leave a log line
            # and ack it; terminal queues are shared, and a bad body would otherwise loop.
            log.warning("ignoring an unreadable %s message: %s", kind, exc)
        except Exception:
            log.exception("updating a job from a %s message failed; it comes back", kind)
            with contextlib.suppress(*_BROKER_ERRORS):
                await channel.basic_nack(tag, requeue=True)
            return
        with contextlib.suppress(*_BROKER_ERRORS):
            await channel.basic_ack(tag)

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS):
                await self._connection.close()
        self._connection = None
