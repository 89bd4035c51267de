"""Helpers that build the envelopes a step produces: next hop, fan-out children, error-end.

They are pure: no I/O, no clock. The sidecar's routing decision is built from them, and any other
router (a third-party sidecar, a test) can reuse them to stay byte-compatible.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from .envelope import Envelope, Route, child_id, new_id
from .errors import ArgumentError

__all__ = [
    "DEFAULT_ERROR_END_QUEUE",
    "DEFAULT_HAPPY_END_QUEUE",
    "ErrorEndPayload",
    "advance",
    "destination",
    "error_end_envelope",
    "error_end_payload",
    "fan_out",
    "unparseable_envelope",
]

DEFAULT_HAPPY_END_QUEUE = "happy-end"
DEFAULT_ERROR_END_QUEUE = "error-end"


def advance(envelope: Envelope, result: bytes | msgspec.Raw) -> Envelope:
    """The envelope after its current step succeeded with ``result`` (raw JSON)."""
    return msgspec.structs.replace(
        envelope, route=envelope.route.advance(), payload=msgspec.Raw(result)
    )


def destination(envelope: Envelope, *, happy_end: str = DEFAULT_HAPPY_END_QUEUE) -> str:
    """Where an envelope goes next: its current step, or ``happy_end`` when exhausted."""
    step = envelope.route.current_step
    return happy_end if step is None else step


def fan_out(envelope: Envelope, results: Iterable[bytes | msgspec.Raw]) -> list[Envelope]:
    """One advanced child per result: child ``i`` gets the id ``child_id(parent.id, i)`` and
    ``parent_id`` = the parent's id, so the same parent always yields the same child ids.

    The parent must have an id (assign one with :meth:`Envelope.ensure_id` first), otherwise
    the children could not be traced back to it.
    """
    if not envelope.id:
        raise ArgumentError("fan_out needs a parent envelope with an id")
    route = envelope.route.advance()
    parent = envelope.id
    return [
        msgspec.structs.replace(
            envelope, route=route, payload=msgspec.Raw(r), id=child_id(parent, i), parent_id=parent
        )
        for i, r in enumerate(results)
    ]


class ErrorEndPayload(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The payload of a message in error-end.

    ``original_payload`` holds the failing step's input; for a message that could not be parsed
    at all, ``original_body`` holds its bytes as text instead.
    """

    error: str
    message: str
    step: str
    original_payload: msgspec.Raw | None = None
    original_body: str | None = None
    details: dict[str, Any] | None = None
    attempts: int | None = None


_encoder = msgspec.json.Encoder()


def error_end_payload(
    *,
    error: str,
    message: str,
    step: str,
    original_payload: bytes | msgspec.Raw | None = None,
    original_body: bytes | str | None = None,
    details: dict[str, Any] | None = None,
    attempts: int | None = None,
) -> bytes:
    """Encode an error-end payload (see :class:`ErrorEndPayload`)."""
    if isinstance(original_body, bytes):
        original_body = original_body.decode("utf-8", errors="replace")
    return _encoder.encode(
        ErrorEndPayload(
            error=error,
            message=message,
            step=step,
            original_payload=None if original_payload is None else msgspec.Raw(original_payload),
            original_body=original_body,
            details=details or None,
            attempts=attempts,
        )
    )


def error_end_envelope(
    envelope: Envelope,
    *,
    error: str,
    message: str,
    details: dict[str, Any] | None = None,
    attempts: int | None = None,
) -> Envelope:
    """The envelope sent to error-end when ``envelope`` failed at its current step.

    The route stays as it is (``current`` at the failing step); id, headers, parent_id and
    unknown fields are kept; the payload becomes an :class:`ErrorEndPayload`.
    """
    step = envelope.route.current_step or DEFAULT_HAPPY_END_QUEUE
    payload = error_end_payload(
        error=error,
        message=message,
        step=step,
        original_payload=envelope.payload,
        details=details,
        attempts=attempts,
    )
    return msgspec.structs.replace(envelope, payload=msgspec.Raw(payload))


def unparseable_envelope(
    body: bytes, *, step: str, error: str, message: str, details: dict[str, Any] | None = None
) -> Envelope:
    """The error-end envelope for a body that is not a valid envelope at all.

    It gets a new id and a one-step route naming the queue where it was received, and its
    payload carries the original body as text.
    """
    payload = error_end_payload(
        error=error, message=message, step=step, original_body=body, details=details
    )
    return Envelope(route=Route(steps=(step,)), payload=msgspec.Raw(payload), id=new_id())
