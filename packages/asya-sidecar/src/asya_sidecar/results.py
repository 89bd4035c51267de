"""What a successful runtime reply becomes, pure: the envelopes that go on from this step.

In payload mode the result replaces the payload; a JSON array fans out, one child per element.
In envelope mode the handler returns the envelope itself (or an array of them): it may change
the steps still to come, never the steps already done nor ``route.current``. Either way a
fan-out's children get ids derived from the parent's, so a redelivered parent repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from asya_protocol import (
    Envelope,
    OkReply,
    ProtocolError,
    RouteError,
    advance,
    child_id,
    decode_envelope,
    fan_out,
)

from .retries import without_attempt

__all__ = ["Results", "envelope_results", "payload_results"]


@dataclass(frozen=True)
class Results:
    """The envelopes to publish (each advanced past this step), and whether they are a fan-out
    (an empty one means nothing goes on)."""

    envelopes: tuple[Envelope, ...]
    fanned_out: bool


def payload_results(envelope: Envelope, reply: OkReply) -> Results:
    base = without_attempt(envelope)
    elements = reply.fan_out()
    if elements is None:
        return Results((advance(base, reply.result),), fanned_out=False)
    return Results(tuple(fan_out(base, elements)), fanned_out=True)


def envelope_results(envelope: Envelope, reply: OkReply) -> Results:
    """Raises :class:`~asya_protocol.RouteError` when a returned envelope is invalid or
    changes what it may not."""
    elements = reply.fan_out()
    raws = [reply.result] if elements is None else elements
    if not raws:
        return Results((), fanned_out=True)
    returned = [_returned(envelope, bytes(raw)) for raw in raws]
    if len(returned) == 1:
        single = msgspec.structs.replace(returned[0], id=envelope.id, parent_id=envelope.parent_id)
        return Results((single.with_route(single.route.advance()),), fanned_out=False)
    parent = envelope.id
    if parent is None:  # pragma: no cover - inspect() gives every Process an id
        raise ValueError("fan-out needs a parent envelope with an id")
    children = tuple(
        msgspec.structs.replace(
            r, id=child_id(parent, i), parent_id=parent, route=r.route.advance()
        )
        for i, r in enumerate(returned)
    )
    return Results(children, fanned_out=True)


def _returned(envelope: Envelope, raw: bytes) -> Envelope:
    """One envelope the handler returned, checked against the one it was given."""
    try:
        returned = decode_envelope(raw)
    except ProtocolError as exc:
        raise RouteError(f"handler returned an invalid envelope: {exc}") from exc
    current = envelope.route.current
    done = envelope.route.steps[: current + 1]
    if returned.route.current != current or returned.route.steps[: current + 1] != done:
        raise RouteError(
            "handler changed the steps already done or route.current "
            f"(expected current={current} and steps starting {list(done)})"
        )
    return without_attempt(returned)
