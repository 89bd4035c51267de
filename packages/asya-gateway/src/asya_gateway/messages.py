"""What the gateway writes to and reads from the broker, on the protocol's types.

A job's first envelope carries the job id in the header :data:`JOB_HEADER`; terminal messages
and step events carrying it are the gateway's to apply. Used by both brokers (RabbitMQ and the
in-process one), so they read messages the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import msgspec

from asya_protocol import (
    JOB_HEADER,
    MAX_ENVELOPE_DEPTH,
    Envelope,
    EnvelopeError,
    EventError,
    Route,
    StepEvent,
    check_json,
    decode_envelope,
    decode_events,
)

__all__ = ["JOB_HEADER", "Unusable", "first_envelope", "step_events", "terminal_message"]

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


@dataclass(frozen=True)
class Unusable:
    """A message that can never be applied (see :mod:`asya_gateway.deadletter`)."""

    reason: str


def terminal_message(body: bytes) -> tuple[str, Envelope] | Unusable:
    """``(job id, envelope)`` of a message in a terminal queue, or why it is not usable.

    Terminal queues are shared: a message of another client (no job header) or a malformed one
    is :class:`Unusable`, for the dead-letter queue, never dropped in silence.
    """
    try:
        envelope = decode_envelope(body)
    except EnvelopeError as exc:
        return Unusable(f"undecodable: {exc}")
    job_id = envelope.headers.get(JOB_HEADER)
    if not job_id:
        return Unusable(f"not a job of this gateway: no {JOB_HEADER} header")
    return job_id, envelope


def step_events(body: bytes) -> list[tuple[str, StepEvent]] | Unusable:
    """The ``(job id, event)`` pairs of a step-event message (one event, or a sidecar's batch
    of them, in order); :class:`Unusable` if it cannot be read. Events of no job are left out
    (the gateway's events queue holds its own copy of every sidecar's events, so another
    pipeline's event is simply not ours, and loses nothing when acked)."""
    try:
        # decode_events recurses per level: bound the depth first, as for envelopes (a batch
        # is one level deeper).
        check_json(body, max_depth=MAX_ENVELOPE_DEPTH + 1, what="step event")
        events = decode_events(body)
    except (EnvelopeError, EventError) as exc:
        return Unusable(f"undecodable: {exc}")
    return [(job_id, event) for event in events if (job_id := event.headers.get(JOB_HEADER))]
