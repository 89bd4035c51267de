"""Step events: advisory JSON messages (no confirm awaited) on ``ASYA_EVENTS_EXCHANGE``."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from asya_protocol import (
    JOB_HEADER,
    Envelope,
    EventScope,
    EventType,
    ProgressReply,
    StepEvent,
    encode_event,
)

from .decision import Decision, Outcome, Process
from .settings import SidecarSettings
from .transport.base import Transport

__all__ = ["StepEvents", "StepReport", "noted"]


class StepEvents:
    """Publishes an actor's step events, unless its events exchange is empty (disabled).

    With ``ASYA_STEP_EVENTS=jobs`` (the default) only a gateway job's messages get events, and
    no ``received`` (the gateway reads ``started`` and later ones): a message nobody follows
    costs no publish, and a followed one four fewer over a three-step route."""

    def __init__(self, settings: SidecarSettings) -> None:
        self._settings = settings
        self._all = settings.step_events is EventScope.ALL

    def wanted(self, kind: EventType, envelope: Envelope) -> bool:
        """Whether an event of ``kind`` about ``envelope`` is published at all."""
        if not self._settings.events_exchange:
            return False
        return self._all or (kind is not EventType.RECEIVED and JOB_HEADER in envelope.headers)

    async def decision(self, transport: Transport, process: Process, decision: Decision) -> None:
        """The event that ends a step: done, failed or retry.

        A fan-out's ``done`` (which names the children a job waits for) is published persistent
        and confirmed; the caller sends it before acking the input, so it is never lost when the
        input is not (see :func:`~asya_sidecar.settle.carry_out`)."""
        envelope = process.envelope
        match decision.outcome:
            case Outcome.FORWARDED | Outcome.HAPPY_END | Outcome.FAN_OUT | Outcome.DROPPED:
                ids = tuple(o.envelope_id or "" for o in decision.publish)
                await self.emit(
                    transport,
                    EventType.DONE,
                    envelope,
                    destination=decision.publish[0].routing_key if decision.publish else None,
                    children=len(decision.publish),
                    child_ids=ids if decision.outcome is Outcome.FAN_OUT else (),
                    message=decision.note,
                    confirmed=decision.outcome is Outcome.FAN_OUT,
                )
            case Outcome.ERROR_END:
                await self.emit(
                    transport,
                    EventType.FAILED,
                    envelope,
                    destination=self._settings.error_end,
                    error=decision.error,
                    message=decision.reason,
                )
            case Outcome.RETRY:
                await self.emit(
                    transport,
                    EventType.RETRY,
                    envelope,
                    error=decision.error,
                    message=decision.reason,
                    attempt=process.attempt,
                )
            case _:
                pass

    async def emit(
        self,
        transport: Transport,
        kind: EventType,
        envelope: Envelope,
        *,
        confirmed: bool = False,
        **fields: Any,
    ) -> None:
        if not self.wanted(kind, envelope):
            return
        event = StepEvent(
            type=kind,
            actor=self._settings.actor,
            time=time.time(),
            id=envelope.id,
            parent_id=envelope.parent_id,
            steps=envelope.route.steps,
            current=envelope.route.current,
            headers=envelope.headers,
            **fields,
        )
        key = f"{self._settings.actor}.{kind.value}"
        await transport.publish_event(key, encode_event(event), confirmed=confirmed)


def noted(decision: Decision, note: str | None) -> Decision:
    """``decision`` carrying ``note``, the message of a progress held back (see
    :class:`StepReport`), if any."""
    return decision if note is None else dataclasses.replace(decision, note=note)


class StepReport:
    """The ``started`` and ``progress`` events of one runtime request (one message, or a
    batch's), held for ``ASYA_PROGRESS_INTERVAL`` seconds.

    A request that ends sooner publishes neither: its ``done`` follows at once and carries the
    message of the last progress it held (:attr:`note`). A longer one publishes ``started``
    when the interval has passed (with the progress held by then), then at most one
    ``progress`` per interval, the latest. With an interval of 0 each is published at once.
    Use as ``async with``: leaving it stops the timer and waits for a publish under way, so
    ``started`` always goes out before the step's ``done``."""

    def __init__(
        self,
        events: StepEvents,
        transport: Transport,
        processes: Sequence[Process],
        interval: float,
    ) -> None:
        self._events = events
        self._transport = transport
        self._processes = [p for p in processes if events.wanted(EventType.STARTED, p.envelope)]
        self._interval = interval
        self._live = False
        """``started`` was published: progress goes out (at most once per interval)."""
        self._last = 0.0
        self._held: ProgressReply | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flush: asyncio.Task[None] | None = None
        self._closed = False
        self.note: str | None = None
        """Set on leaving: the message of a progress held and never published."""

    async def __aenter__(self) -> StepReport:
        if not self._processes:
            return self
        if self._interval <= 0:
            await self._started()
        else:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._due)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush is not None:
            await self._flush
        if self._held is not None:
            self.note = self._held.message
            self._held = None

    async def progress(self, reply: ProgressReply) -> None:
        """A progress frame of the request: published now, or held (the latest wins)."""
        if not self._processes:
            return
        if self._interval <= 0:
            await self._progress(reply)
            return
        self._held = reply
        if not self._live or self._timer is not None or self._flush is not None:
            return  # started is not out yet, or a publish is already due: it takes this one
        wait = self._last + self._interval - time.monotonic()
        if wait <= 0:
            self._held = None
            await self._progress(reply)
        else:
            self._timer = asyncio.get_running_loop().call_later(wait, self._due)

    def _due(self) -> None:
        self._timer = None  # never after leaving: the timer is cancelled, _rearm stops
        self._flush = asyncio.ensure_future(self._publish_due())

    async def _publish_due(self) -> None:
        try:
            if not self._live:
                await self._started()
            held, self._held = self._held, None
            if held is not None:
                await self._progress(held)
        finally:
            self._flush = None
        self._rearm()

    def _rearm(self) -> None:
        """A progress that came while publishing goes out one interval later."""
        if self._held is not None and self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._due)

    async def _started(self) -> None:
        self._live = True
        self._last = time.monotonic()
        for process in self._processes:
            await self._events.emit(
                self._transport, EventType.STARTED, process.envelope, attempt=process.attempt
            )

    async def _progress(self, reply: ProgressReply) -> None:
        self._last = time.monotonic()
        for process in self._processes:
            await self._events.emit(
                self._transport,
                EventType.PROGRESS,
                process.envelope,
                progress=reply.progress,
                message=reply.message,
            )
