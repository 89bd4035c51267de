"""Step events: what a sidecar announces about each message, for the gateway (and anyone else).

Sidecars publish them, without waiting for confirms, to a durable topic exchange (default
``asya.events``) with routing key ``<actor>.<type>``. They are advisory: job state is final only
through the terminal queues, so a lost event delays nothing but a progress display. The one
exception is a fan-out's ``done`` (its ``child_ids`` are what a job waits for): persistent and
confirmed before the input's ack.

A sidecar may publish several advisory events as one message (``ASYA_EVENTS_BATCH_WINDOW``): a
JSON array of events, in the order they happened, with routing key ``<actor>.batch``
(:data:`BATCH_KEY`). :func:`decode_events` reads either form.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import msgspec

from .errors import EventError

__all__ = [
    "BATCH_KEY",
    "DEFAULT_EVENTS_EXCHANGE",
    "JOB_HEADER",
    "EventScope",
    "EventType",
    "StepEvent",
    "decode_event",
    "decode_events",
    "encode_event",
    "encode_event_batch",
]

DEFAULT_EVENTS_EXCHANGE = "asya.events"
BATCH_KEY = "batch"
"""The last word of a batch's routing key (``<actor>.batch``), where one event's is its type."""
JOB_HEADER = "asya-job-id"
"""The envelope header naming the gateway job a message belongs to. Sidecars publish
``partial`` events only for messages that carry it: nobody else follows partial results."""


class EventScope(StrEnum):
    """Which messages and events a sidecar announces (``ASYA_STEP_EVENTS``)."""

    JOBS = "jobs"
    """Messages of a gateway job (they carry :data:`JOB_HEADER`), every type but ``received``:
    what the gateway reads. Other messages are followed by nobody, so they cost nothing."""
    ALL = "all"
    """Every message, every type (``received`` included): for other observers."""


class EventType(StrEnum):
    RECEIVED = "received"  # the sidecar took the message from its queue
    STARTED = "started"  # the runtime got the payload
    PROGRESS = "progress"  # the runtime reported progress
    DONE = "done"  # the step succeeded; output published (see destination, children)
    FAILED = "failed"  # the message went to error-end (see error)
    RETRY = "retry"  # the step failed and will be tried again after a delay
    PARTIAL = "partial"  # the runtime streamed partial results (see chunks)


class StepEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: EventType
    actor: str
    time: float
    """Seconds since the epoch."""
    id: str | None = None
    parent_id: str | None = None
    steps: tuple[str, ...] = ()
    current: int | None = None
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    progress: float | None = None
    message: str | None = None
    destination: str | None = None
    """Where the output went: the next step, happy-end, error-end or a retry queue."""
    children: int | None = None
    """On ``done``: how many messages the step produced (fan-out), 0 for an empty fan-out."""
    child_ids: tuple[str, ...] = ()
    error: str | None = None
    attempt: int | None = None
    chunks: tuple[Any, ...] = ()
    """On ``partial``: the partial results, in the order the handler produced them."""
    offset: int | None = None
    """On ``partial``: how many partial results of this message (this attempt) came before."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StepEvent)


def encode_event(event: StepEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(body: bytes) -> StepEvent:
    """Decode a step event; :class:`~asya_protocol.errors.EventError` if it is not one."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise EventError(f"not a step event: {exc}") from None


_batch_decoder = msgspec.json.Decoder(list[StepEvent])


def encode_event_batch(events: list[bytes]) -> bytes:
    """One message of several encoded events (each from :func:`encode_event`), in order."""
    return b"[" + b",".join(events) + b"]"


def decode_events(body: bytes) -> list[StepEvent]:
    """The events of a message: one event, or a batch of them (a JSON array);
    :class:`~asya_protocol.errors.EventError` if it is neither."""
    if body.lstrip()[:1] != b"[":
        return [decode_event(body)]
    try:
        return _batch_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise EventError(f"not a batch of step events: {exc}") from None
