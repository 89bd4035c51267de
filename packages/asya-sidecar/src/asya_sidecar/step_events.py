"""Step events: advisory JSON messages (no confirm awaited) on ``ASYA_EVENTS_EXCHANGE``."""

from __future__ import annotations

import time
from typing import Any

from asya_protocol import JOB_HEADER, Envelope, EventScope, EventType, StepEvent, encode_event

from .decision import Decision, Outcome, Process
from .settings import SidecarSettings
from .transport.base import Transport

__all__ = ["StepEvents"]


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
