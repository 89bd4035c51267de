"""What the gateway writes to and reads from the broker, on the protocol's types.

A job's first envelope carries the job id in the header :data:`JOB_HEADER`; terminal messages
and step events carrying it are the gateway's to apply. Used by both brokers (RabbitMQ and the
in-process one), so they read messages the same way.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec

from asya_protocol import (
    Envelope,
    EnvelopeError,
    EventError,
    Route,
    StepEvent,
    decode_envelope,
    decode_event,
)

__all__ = ["JOB_HEADER", "first_envelope", "step_event", "terminal_message"]

log = logging.getLogger("asya_gateway.broker")
JOB_HEADER = "asya-job-id"
_encoder = msgspec.json.Encoder()


def _traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def first_envelope(
    steps: tuple[str, ...], arguments: Any, *, job_id: str, root_id: str
) -> Envelope:
    """The envelope that starts a job: its arguments to the first step, a fresh traceparent."""
    return Envelope(
        id=root_id,
        route=Route(steps=steps),
        payload=msgspec.Raw(_encoder.encode(arguments)),
        headers={JOB_HEADER: job_id, "traceparent": _traceparent()},
    )


def terminal_message(body: bytes, queue: str) -> tuple[str, Envelope] | None:
    """``(job id, envelope)`` of a message in a terminal queue, or None if it is not a job's.

    Terminal queues are shared: a message of another client, or a malformed one, is not ours
    to understand; it leaves a log line and is acked (a bad body would otherwise loop).
    """
    try:
        envelope = decode_envelope(body)
    except EnvelopeError as exc:
        log.warning("ignoring an unreadable message in %s: %s", queue, exc)
        return None
    job_id = envelope.headers.get(JOB_HEADER)
    return (job_id, envelope) if job_id else None


def step_event(body: bytes) -> tuple[str, StepEvent] | None:
    """``(job id, event)`` of a step event, or None if it is unreadable or not a job's."""
    try:
        event = decode_event(body)
    except EventError as exc:
        log.warning("ignoring an unreadable step event: %s", exc)
        return None
    job_id = event.headers.get(JOB_HEADER)
    return (job_id, event) if job_id else None
