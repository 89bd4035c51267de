"""The sidecar's routing decision, as pure functions: no I/O, no clock, no randomness of its own.

Given a delivery (and later the runtime's reply), say what to publish where and whether to ack.
The consumer only carries the decision out, so every rule here is unit-tested exhaustively.

Two phases:

1. :func:`inspect` a delivery: it is either settled at once (unparseable, wrong route, redelivered
   too often, redelivered and to be counted) or it goes to the runtime.
2. :func:`after_runtime`: given the runtime outcome, the messages to publish.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from asya_protocol import (
    MAX_JSON_DEPTH,
    Envelope,
    EnvelopeError,
    ErrorCode,
    ErrorReply,
    OkReply,
    ProtocolError,
    RouteError,
    advance,
    check_json,
    child_id,
    decode_envelope,
    encode_envelope,
    error_end_envelope,
    error_end_payload,
    fan_out,
    unparseable_envelope,
)

from .settings import RetryPolicy

__all__ = [
    "ATTEMPT_HEADER",
    "REDELIVERY_HEADER",
    "Decision",
    "Outcome",
    "Outgoing",
    "Process",
    "RoutingContext",
    "RuntimeTimeout",
    "RuntimeUnavailableOutcome",
    "after_runtime",
    "inspect",
    "inspect_failed",
    "retry_bucket",
    "retry_queue_name",
    "unroutable",
]

ATTEMPT_HEADER = "asya-attempt"
"""Envelope header: which attempt of the current step this is (absent means the first)."""

REDELIVERY_HEADER = "x-asya-redeliveries"
"""AMQP message header: how many times the sidecars saw this message redelivered."""


class Outcome(StrEnum):
    FORWARDED = "forwarded"  # to the next step
    FAN_OUT = "fan_out"  # several messages to the next step (or happy-end)
    HAPPY_END = "happy_end"
    ERROR_END = "error_end"
    RETRY = "retry"  # to a delay queue, back to this step later
    DROPPED = "dropped"  # an empty fan-out: nothing to publish, the message is done
    RECOUNTED = "recounted"  # redelivered: republished to this queue with its count raised
    REQUEUE = "requeue"  # not acked: the broker delivers it again


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: to ``exchange`` (None = the actor's exchange) with ``routing_key``.

    ``delay_ms`` is set on retries: the message goes to the delay queue ``routing_key`` and must
    expire after that many milliseconds. ``redeliveries`` is the AMQP header to set, if any.
    """

    routing_key: str
    body: bytes
    envelope_id: str | None = None
    delay_ms: int | None = None
    redeliveries: int | None = None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    publish: tuple[Outgoing, ...] = ()
    ack: bool = True
    error: str | None = None
    """The error code, for error-end, retry and requeue outcomes."""
    reason: str = ""

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(o.routing_key for o in self.publish)


@dataclass(frozen=True)
class RoutingContext:
    actor: str
    happy_end: str
    error_end: str
    retry: RetryPolicy
    redelivery_limit: int
    envelope_mode: bool = False


@dataclass(frozen=True)
class Process:
    """The delivery goes to the runtime: ``envelope`` (with an id) and the request frame body."""

    envelope: Envelope
    request: bytes
    attempt: int


@dataclass(frozen=True)
class RuntimeTimeout:
    seconds: float


@dataclass(frozen=True)
class RuntimeUnavailableOutcome:
    reason: str


RuntimeOutcome = OkReply | ErrorReply | RuntimeTimeout | RuntimeUnavailableOutcome


def _error_end(
    ctx: RoutingContext,
    envelope: Envelope,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    attempts: int | None = None,
) -> Decision:
    failed = error_end_envelope(
        _without_attempt(envelope), error=code, message=message, details=details, attempts=attempts
    )
    out = Outgoing(ctx.error_end, encode_envelope(failed), failed.id)
    return Decision(Outcome.ERROR_END, (out,), error=code, reason=message)


def _without_attempt(envelope: Envelope) -> Envelope:
    if ATTEMPT_HEADER not in envelope.headers:
        return envelope
    headers = {k: v for k, v in envelope.headers.items() if k != ATTEMPT_HEADER}
    return msgspec.structs.replace(envelope, headers=headers)


def _attempt(envelope: Envelope) -> int:
    raw = envelope.headers.get(ATTEMPT_HEADER)
    try:
        return max(1, int(raw)) if raw else 1
    except ValueError:
        return 1


def inspect(
    body: bytes, ctx: RoutingContext, *, redelivered: bool = False, redeliveries: int = 0
) -> Decision | Process:
    """Settle a delivery at once, or hand it to the runtime.

    ``redelivered`` is the broker's flag; ``redeliveries`` the count in :data:`REDELIVERY_HEADER`.
    A redelivered message is republished to this actor's queue with the count raised (and the
    original acked), so a message that crashes its actor again and again is counted even on
    queues that keep no count; past ``redelivery_limit`` it goes to error-end.

    A body that is not an envelope (bad JSON, not UTF-8, nested past the depth limit) goes to
    error-end as ``parse_error``. Any other exception raised while inspecting is counted the same
    way on the raw body (see :func:`inspect_failed`), so no body can come back forever.
    """
    try:
        return _inspect(body, ctx, redelivered=redelivered, redeliveries=redeliveries)
    except Exception as exc:  # noqa: BLE001 - settled below: counted, then error-end
        return inspect_failed(body, exc, ctx, redeliveries=redeliveries)


def inspect_failed(
    body: bytes, exc: Exception, ctx: RoutingContext, *, redeliveries: int = 0
) -> Decision:
    """An unexpected exception while inspecting ``body``: a bug, or a body that breaks a
    decoder in a way the protocol's checks missed.

    The envelope cannot be trusted, so the raw body is republished to this actor's queue with
    its redelivery count raised; past ``redelivery_limit`` it goes to error-end (a one-step
    route, the body as text) with the exception in ``details``.
    """
    count = redeliveries + 1
    what = f"{type(exc).__name__}: {exc}"
    if count > ctx.redelivery_limit:
        message = (
            f"inspecting the message failed {count} times (limit {ctx.redelivery_limit}): {what}"
        )
        failed = unparseable_envelope(
            body,
            step=ctx.actor,
            error=ErrorCode.REDELIVERY_LIMIT,
            message=message,
            details={"exception": type(exc).__name__},
        )
        out = Outgoing(ctx.error_end, encode_envelope(failed), failed.id)
        return Decision(Outcome.ERROR_END, (out,), error=ErrorCode.REDELIVERY_LIMIT, reason=message)
    out = Outgoing(ctx.actor, body, redeliveries=count)
    return Decision(Outcome.RECOUNTED, (out,), reason=f"inspecting failed ({what}); try {count}")


def _inspect(
    body: bytes, ctx: RoutingContext, *, redelivered: bool, redeliveries: int
) -> Decision | Process:
    try:
        envelope = decode_envelope(body)
    except EnvelopeError as exc:
        code = ErrorCode.ROUTE_ERROR if isinstance(exc, RouteError) else ErrorCode.PARSE_ERROR
        failed = unparseable_envelope(body, step=ctx.actor, error=code, message=str(exc))
        out = Outgoing(ctx.error_end, encode_envelope(failed), failed.id)
        return Decision(Outcome.ERROR_END, (out,), error=code, reason=str(exc))
    envelope = envelope.ensure_id()
    try:
        # The envelope's own limit leaves room for one more level (error-end wraps the payload);
        # a payload must fit MAX_JSON_DEPTH so the runtime, the next hop and error-end take it.
        check_json(envelope.payload, max_depth=MAX_JSON_DEPTH, what="payload")
    except EnvelopeError as exc:
        return _error_end_unreadable_payload(ctx, envelope, str(exc))
    step = envelope.route.current_step
    if step != ctx.actor:
        where = "is exhausted" if step is None else f"points at {step!r}"
        message = (
            f"route.current={envelope.route.current} {where}, but this actor consumes {ctx.actor!r}"
        )
        return _error_end_at(ctx, envelope, ErrorCode.ROUTE_ERROR, message)
    if redelivered:
        count = redeliveries + 1
        if count > ctx.redelivery_limit:
            return _error_end(
                ctx,
                envelope,
                ErrorCode.REDELIVERY_LIMIT,
                f"delivered {count} times without finishing (limit {ctx.redelivery_limit}); "
                "the step may crash its actor",
                attempts=count,
            )
        out = Outgoing(ctx.actor, encode_envelope(envelope), envelope.id, redeliveries=count)
        return Decision(Outcome.RECOUNTED, (out,), reason=f"redelivery {count}")
    request = encode_envelope(envelope) if ctx.envelope_mode else bytes(envelope.payload)
    return Process(envelope, request, _attempt(envelope))


def _error_end_unreadable_payload(
    ctx: RoutingContext, envelope: Envelope, message: str
) -> Decision:
    """Error-end ``parse_error`` for a payload too deep to wrap: its bytes are kept as text."""
    payload = error_end_payload(
        error=ErrorCode.PARSE_ERROR,
        message=message,
        step=ctx.actor,
        original_body=bytes(envelope.payload),
    )
    failed = _without_attempt(envelope).with_raw_payload(payload)
    out = Outgoing(ctx.error_end, encode_envelope(failed), failed.id)
    return Decision(Outcome.ERROR_END, (out,), error=ErrorCode.PARSE_ERROR, reason=message)


def _error_end_at(ctx: RoutingContext, envelope: Envelope, code: str, message: str) -> Decision:
    """Error-end for an envelope whose route does not point here (``step`` names this actor)."""
    payload = error_end_payload(
        error=code, message=message, step=ctx.actor, original_payload=envelope.payload
    )
    failed = _without_attempt(envelope).with_raw_payload(payload)
    out = Outgoing(ctx.error_end, encode_envelope(failed), failed.id)
    return Decision(Outcome.ERROR_END, (out,), error=code, reason=message)


def after_runtime(
    process: Process, outcome: RuntimeOutcome, ctx: RoutingContext, *, random_unit: float = 0.5
) -> Decision:
    """What to publish after the runtime answered (or did not). ``random_unit`` in [0, 1)."""
    envelope = process.envelope
    match outcome:
        case OkReply():
            if ctx.envelope_mode:
                return _envelope_mode_result(envelope, outcome, ctx)
            return _payload_result(envelope, outcome, ctx)
        case ErrorReply():
            retry = outcome.retryable is True or (
                outcome.retryable is None and outcome.error in ctx.retry.codes
            )
            details = dict(outcome.details or {})
            return _fail(ctx, process, outcome.error, outcome.message, retry, details, random_unit)
        case RuntimeTimeout():
            message = f"the runtime did not answer within {outcome.seconds:g}s"
            retry = ErrorCode.TIMEOUT in ctx.retry.codes
            return _fail(ctx, process, ErrorCode.TIMEOUT, message, retry, None, random_unit)
        case RuntimeUnavailableOutcome():
            # Not the message's fault: let the broker deliver it again (counted on redelivery).
            return Decision(
                Outcome.REQUEUE,
                ack=False,
                error=ErrorCode.RUNTIME_UNAVAILABLE,
                reason=outcome.reason,
            )
    raise TypeError(f"unknown runtime outcome {outcome!r}")  # pragma: no cover


def _fail(
    ctx: RoutingContext,
    process: Process,
    code: str,
    message: str,
    retry: bool,
    details: dict[str, Any] | None,
    random_unit: float,
) -> Decision:
    envelope = process.envelope
    if retry and process.attempt < ctx.retry.max_attempts:
        delay = ctx.retry.delay(process.attempt, random_unit)
        delay_ms = max(1, math.ceil(delay * 1000))
        headers = {**envelope.headers, ATTEMPT_HEADER: str(process.attempt + 1)}
        again = msgspec.structs.replace(envelope, headers=headers)
        out = Outgoing(
            retry_queue_name(ctx.actor, delay_ms),
            encode_envelope(again),
            again.id,
            delay_ms=delay_ms,
        )
        reason = f"attempt {process.attempt} failed ({code}); retry in {delay:.3f}s"
        return Decision(Outcome.RETRY, (out,), error=code, reason=reason)
    attempts = process.attempt if process.attempt > 1 or retry else None
    return _error_end(ctx, envelope, code, message, details=details, attempts=attempts)


def _payload_result(envelope: Envelope, reply: OkReply, ctx: RoutingContext) -> Decision:
    base = _without_attempt(envelope)
    elements = reply.fan_out()
    if elements is None:
        after = advance(base, reply.result)
        return _forward(ctx, (after,), Outcome.FORWARDED)
    if not elements:
        return Decision(Outcome.DROPPED, reason="empty fan-out")
    return _forward(ctx, tuple(fan_out(base, elements)), Outcome.FAN_OUT)


def _forward(ctx: RoutingContext, envelopes: Sequence[Envelope], outcome: Outcome) -> Decision:
    publish = []
    for env in envelopes:
        step = env.route.current_step
        destination = ctx.happy_end if step is None else step
        publish.append(Outgoing(destination, encode_envelope(env), env.id))
    if outcome is Outcome.FORWARDED and envelopes[0].route.exhausted:
        outcome = Outcome.HAPPY_END
    return Decision(outcome, tuple(publish))


def _envelope_mode_result(envelope: Envelope, reply: OkReply, ctx: RoutingContext) -> Decision:
    elements = reply.fan_out()
    raws = [reply.result] if elements is None else elements
    if not raws:
        return Decision(Outcome.DROPPED, reason="empty fan-out")
    results: list[Envelope] = []
    for raw in raws:
        try:
            returned = decode_envelope(bytes(raw))
        except ProtocolError as exc:
            return _error_end(
                ctx, envelope, ErrorCode.ROUTE_ERROR, f"handler returned an invalid envelope: {exc}"
            )
        done = envelope.route.steps[: envelope.route.current + 1]
        if (
            returned.route.current != envelope.route.current
            or returned.route.steps[: envelope.route.current + 1] != done
        ):
            return _error_end(
                ctx,
                envelope,
                ErrorCode.ROUTE_ERROR,
                "handler changed the steps already done or route.current "
                f"(expected current={envelope.route.current} and steps starting {list(done)})",
            )
        results.append(_without_attempt(returned))
    if len(results) == 1:
        single = msgspec.structs.replace(results[0], id=envelope.id, parent_id=envelope.parent_id)
        return _forward(ctx, (single.with_route(single.route.advance()),), Outcome.FORWARDED)
    # The same ids as payload-mode fan-out: derived, so a redelivered parent repeats them.
    parent = envelope.id
    if parent is None:  # pragma: no cover - inspect() gives every Process an id
        raise ValueError("fan-out needs a parent envelope with an id")
    children = [
        msgspec.structs.replace(
            r, id=child_id(parent, i), parent_id=parent, route=r.route.advance()
        )
        for i, r in enumerate(results)
    ]
    return _forward(ctx, children, Outcome.FAN_OUT)


def unroutable(process: Process, ctx: RoutingContext, routing_key: str) -> Decision:
    """The broker returned a publish to ``routing_key``: send the input to error-end instead."""
    return _error_end(
        ctx,
        process.envelope,
        ErrorCode.UNROUTABLE,
        f"no queue is bound to {routing_key!r} on the exchange; is the actor deployed?",
        details={"destination": routing_key},
    )


RETRY_BUCKETS_MS: tuple[int, ...] = tuple(1000 * 2**i for i in range(0, 18))  # 1 s .. ~36 h


def retry_bucket(delay_ms: int) -> int:
    """Delay queues come in power-of-two buckets so their number stays small; a message waits
    its own (jittered) delay through the per-message expiration, bounded by its bucket."""
    for bucket in RETRY_BUCKETS_MS:
        if delay_ms <= bucket:
            return bucket
    return RETRY_BUCKETS_MS[-1]


def retry_queue_name(actor: str, delay_ms: int) -> str:
    return f"asya-retry.{actor}.{retry_bucket(delay_ms)}"
