"""Settling one delivery: publish what its decision says, each publish confirmed, then ack (or
give it back); an unroutable step output sends the input to error-end instead."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from .decision import Decision, Outcome, Process, RoutingContext, unroutable
from .errors import TransportError, Unroutable
from .metrics import Metrics
from .step_events import StepEvents
from .transport.base import Delivery, Transport

__all__ = ["carry_out", "nack_all"]

log = logging.getLogger("asya_sidecar")


async def carry_out(
    transport: Transport,
    delivery: Delivery,
    decision: Decision,
    process: Process | None,
    ctx: RoutingContext,
    metrics: Metrics,
    events: StepEvents,
) -> None:
    try:
        for out in decision.publish:
            await transport.publish(out)
    except Unroutable as exc:
        if process is None or exc.routing_key == ctx.error_end:
            log.error("cannot route to %r (queue deleted?); message goes back", exc.routing_key)
            await asyncio.sleep(1.0)  # do not spin on a broken setup
            await delivery.nack()
            return
        log.warning("step output unroutable: %s; input goes to %s", exc, ctx.error_end)
        decision = unroutable(process, ctx, exc.routing_key)
        for out in decision.publish:
            await transport.publish(out)
    # A fan-out's done event is confirmed before the ack (a job waits for it); the others after.
    fan_out = decision.outcome is Outcome.FAN_OUT
    if process is not None and fan_out:
        await events.decision(transport, process, decision)
    if decision.ack:
        await delivery.ack()
    else:
        await delivery.nack()
    if decision.outcome is Outcome.RETRY:
        metrics.retries.inc()
    if process is not None and not fan_out:
        await events.decision(transport, process, decision)
    metrics.outcome(decision.outcome.value)


async def nack_all(deliveries: Sequence[Delivery]) -> None:
    """Give every one of ``deliveries`` back (best effort: the connection may be gone)."""
    for delivery in deliveries:
        with contextlib.suppress(TransportError):
            await delivery.nack()
