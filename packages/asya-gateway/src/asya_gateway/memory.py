"""The gateway's broker side on an in-process broker, for a single-process development run.

The in-process broker itself is the sidecars' (``asya_sidecar.MemoryBroker``); the gateway may
not import the sidecar, so it names what it needs of one in :class:`InProcessQueues`, and the
caller passes the broker's "no such queue" exception as ``unroutable``. Messages are read with
the same functions as on RabbitMQ (:mod:`asya_gateway.messages`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

from asya_protocol import Backoff, Envelope, StepEvent, encode_envelope

from .deadletter import Settle, Verdict, after_error, dead_letter_queue, unknown_job, worst
from .errors import PublishFailed
from .jobs import JobStore
from .messages import Unusable, step_events, terminal_message
from .ordering import StepEventsFirst
from .supervise import NO_HEALTH, Health

__all__ = ["InProcessQueues", "MemoryBroker"]

log = logging.getLogger("asya_gateway.memory")
EVENTS_QUEUE = "asya-gateway-events"  # where dead step events go: <this>.dead


def _after_error(exc: Exception) -> Verdict:
    # In one process a message is never redelivered by a broker: an error other than the
    # database being unavailable will not pass on a second try, so it dead-letters at once.
    return after_error(exc, redelivered=True)


class InProcessQueues(Protocol):
    """Named queues in this process, and listeners for the sidecars' step events."""

    event_listeners: list[Callable[[str, bytes], None]]

    def declare(self, name: str) -> None: ...

    def queue(self, name: str) -> asyncio.Queue[Any]:
        """The queue of that name; its items have ``body`` (bytes)."""
        ...

    async def publish(self, routing_key: str, body: bytes) -> None: ...

    async def publish_control(self, body: bytes) -> None:
        """Hand a job control message to every sidecar of this process."""
        ...


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
        self.events_queue = EVENTS_QUEUE
        self.connected = asyncio.Event()
        self._retry = Backoff()
        self._events: asyncio.Queue[bytes] = asyncio.Queue()
        self._order = StepEventsFirst()
        queues.declare(happy_end)
        queues.declare(error_end)
        queues.event_listeners.append(self._on_event)

    def _on_event(self, _key: str, body: bytes) -> None:
        self._order.receive()
        self._events.put_nowait(body)

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

    async def publish_control(self, body: bytes) -> None:
        await self.queues.publish_control(body)

    async def consume(self, health: Health = NO_HEALTH) -> None:
        self.connected.set()
        health.ok()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._terminal(self.happy_end, ok=True))
            tg.create_task(self._terminal(self.error_end, ok=False))
            tg.create_task(self._steps())

    async def _terminal(self, queue: str, *, ok: bool) -> None:
        source = self.queues.queue(queue)
        while True:
            message = await source.get()
            await self._order.caught_up()  # the job's step events first (partial results)
            verdict = await self._apply_terminal(message.body, ok=ok)
            await self._carry_out(
                verdict, queue, message.body, functools.partial(source.put_nowait, message)
            )

    async def _apply_terminal(self, body: bytes, *, ok: bool) -> Verdict:
        found = terminal_message(body)
        if isinstance(found, Unusable):
            return Verdict(Settle.DEAD, found.reason)
        try:
            known = await self.store.on_terminal(found[0], found[1], ok=ok)
        except Exception as exc:  # noqa: BLE001 - settled (and logged) by _carry_out
            return _after_error(exc)
        return Verdict(Settle.ACK) if known else unknown_job(found[0])

    async def _steps(self) -> None:
        while True:
            body = await self._events.get()
            verdict = await self._apply_step(body)
            await self._carry_out(
                verdict, self.events_queue, body, functools.partial(self._events.put_nowait, body)
            )
            if verdict.settle is not Settle.RETRY:  # a retried one is applied when it comes back
                self._order.apply()

    async def _apply_step(self, body: bytes) -> Verdict:
        found = step_events(body)
        if isinstance(found, Unusable):
            return Verdict(Settle.DEAD, found.reason)
        by_job: dict[str, list[StepEvent]] = {}
        for job_id, event in found:  # none: another pipeline's events, not ours
            by_job.setdefault(job_id, []).append(event)
        verdicts = []  # every job's events applied, as on RabbitMQ; the message settled once
        for job_id, events in by_job.items():
            try:
                known = await self.store.on_steps(job_id, events)
            except Exception as exc:  # noqa: BLE001 - settled (and logged) by _carry_out
                verdicts.append(_after_error(exc))
            else:
                verdicts.append(Verdict(Settle.ACK) if known else unknown_job(job_id))
        return worst(verdicts)

    async def _carry_out(
        self, verdict: Verdict, queue: str, body: bytes, requeue: Callable[[], None]
    ) -> None:
        """As on RabbitMQ: dead letters to ``<queue>.dead``, retries after the backoff."""
        if verdict.settle is Settle.RETRY:
            log.warning("applying a message from %s failed, retrying: %s", queue, verdict.reason)
            await self._retry.sleep()
            requeue()
            return
        self._retry.reset()
        if verdict.settle is Settle.DEAD:
            target = dead_letter_queue(queue)
            self.queues.declare(target)
            await self.queues.publish(target, body)
            log.warning("dead-lettered a message from %s to %s: %s", queue, target, verdict.reason)

    async def close(self) -> None:
        self.connected.clear()
