"""The sidecar's routing decision, as pure functions: no I/O, no clock, no randomness of its own.

Given a delivery (and later the runtime's reply), say what to publish where and whether to ack.
The consumer only carries the decision out, so every rule here is unit-tested exhaustively.

Two phases:

1. :func:`inspect` a delivery: it is either settled at once (unparseable, wrong route, redelivered
   too often, redelivered and to be counted) or it goes to the runtime.
2. :func:`after_runtime`: given the runtime outcome, the messages to publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from asya_protocol import (
    JOB_HEADER,
    MAX_JSON_DEPTH,
    Envelope,
    EnvelopeError,
    ErrorCode,
    ErrorReply,
    OkReply,
    RouteError,
    check_json,
    decode_envelope,
    destination,
    encode_envelope,
    error_end_envelope,
    error_end_payload,
    unparseable_envelope,
)

from .results import Results, envelope_results, payload_results
from .retries import attempt_of, delay_ms, next_attempt, retry_queue_name, without_attempt
from .settings import RetryPolicy, SidecarSettings

__all__ = [
    "REDELIVERY_HEADER",
    "Decision",
    "Outcome",
    "Outgoing",
    "Process",
    "RoutingContext",
    "RuntimeTimeout",
    "RuntimeUnavailableOutcome",
    "after_runtime",
    "cancelled",
    "inspect",
    "inspect_failed",
    "unroutable",
]

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
    CANCELLED = "cancelled"  # its job was cancelled: acked, nothing published


@dataclass(frozen=True)
class Outgoing:
    """One message to publish on the actor's exchange with ``routing_key``.

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
    note: str | None = None
    """The message of the step's last progress, when that progress was held and never
    published (see :class:`~asya_sidecar.step_events.StepReport`): its ``done`` carries it."""


@dataclass(frozen=True)
class RoutingContext:
    actor: str
    happy_end: str
    error_end: str
    retry: RetryPolicy
    redelivery_limit: int
    envelope_mode: bool = False

    @classmethod
    def of(cls, settings: SidecarSettings, *, envelope_mode: bool) -> RoutingContext:
        """The context of the actor ``settings`` describe, its runtime in the mode it said."""
        return cls(
            actor=settings.actor,
            happy_end=settings.happy_end,
            error_end=settings.error_end,
            retry=settings.retry,
            redelivery_limit=settings.redelivery_limit,
            envelope_mode=envelope_mode,
        )


@dataclass(frozen=True)
class Process:
    """The delivery goes to the runtime: ``envelope`` (with an id) and the request frame body."""

    envelope: Envelope
    request: bytes
    attempt: int

    @property
    def job_id(self) -> str | None:
        """The gateway job the message belongs to (its ``asya-job-id`` header), if any."""
        return self.envelope.headers.get(JOB_HEADER) or None


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
        without_attempt(envelope), error=code, message=message, details=details, attempts=attempts
    )
    return _to_error_end(ctx, failed, code, message)


def _to_error_end(ctx: RoutingContext, failed: Envelope, code: str, message: str) -> Decision:
    """Publish ``failed`` (an error-end envelope) to error-end and ack."""
    out = Outgoing(ctx.error_end, encode_envelope(failed), failed.id)
    return Decision(Outcome.ERROR_END, (out,), error=code, reason=message)


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
        return _to_error_end(ctx, failed, ErrorCode.REDELIVERY_LIMIT, message)
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
        return _to_error_end(ctx, failed, code, str(exc))
    envelope = envelope.ensure_id()
    try:
        # The envelope's own limit leaves room for one more level (error-end wraps the payload);
        # a payload must fit MAX_JSON_DEPTH so the runtime, the next hop and error-end take it.
        check_json(envelope.payload, max_depth=MAX_JSON_DEPTH, what="payload")
    except EnvelopeError as exc:
        # Too deep to wrap: its bytes are kept as text.
        body_text = bytes(envelope.payload)
        return _error_end_here(ctx, envelope, ErrorCode.PARSE_ERROR, str(exc), body=body_text)
    step = envelope.route.current_step
    if step != ctx.actor:
        where = "is exhausted" if step is None else f"points at {step!r}"
        message = (
            f"route.current={envelope.route.current} {where}, but this actor consumes {ctx.actor!r}"
        )
        return _error_end_here(ctx, envelope, ErrorCode.ROUTE_ERROR, message)
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
    return Process(envelope, request, attempt_of(envelope))


def _error_end_here(
    ctx: RoutingContext, envelope: Envelope, code: str, message: str, *, body: bytes | None = None
) -> Decision:
    """Error-end with ``step`` naming this actor (the route may point elsewhere) and the
    original payload, or ``body`` as text when given (a payload too deep to wrap)."""
    payload = error_end_payload(
        error=code,
        message=message,
        step=ctx.actor,
        original_payload=None if body is not None else envelope.payload,
        original_body=body,
    )
    failed = without_attempt(envelope).with_raw_payload(payload)
    return _to_error_end(ctx, failed, code, message)


def after_runtime(
    process: Process, outcome: RuntimeOutcome, ctx: RoutingContext, *, random_unit: float = 0.5
) -> Decision:
    """What to publish after the runtime answered (or did not). ``random_unit`` in [0, 1)."""
    envelope = process.envelope
    match outcome:
        case OkReply():
            try:
                results = (envelope_results if ctx.envelope_mode else payload_results)(
                    envelope, outcome
                )
            except RouteError as exc:
                return _error_end(ctx, envelope, ErrorCode.ROUTE_ERROR, str(exc))
            return _forward(ctx, results)
        case ErrorReply(error=ErrorCode.NOT_READY):
            # The runtime refused the work (a handler is stuck there): not the message's fault.
            return Decision(
                Outcome.REQUEUE, ack=False, error=ErrorCode.NOT_READY, reason=outcome.message
            )
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
        wait_ms = delay_ms(delay)
        again = next_attempt(envelope, process.attempt)
        out = Outgoing(
            retry_queue_name(ctx.actor, wait_ms), encode_envelope(again), again.id, delay_ms=wait_ms
        )
        reason = f"attempt {process.attempt} failed ({code}); retry in {delay:.3f}s"
        return Decision(Outcome.RETRY, (out,), error=code, reason=reason)
    attempts = process.attempt if process.attempt > 1 or retry else None
    return _error_end(ctx, envelope, code, message, details=details, attempts=attempts)


def _forward(ctx: RoutingContext, results: Results) -> Decision:
    if not results.envelopes:
        return Decision(Outcome.DROPPED, reason="empty fan-out")
    publish = tuple(
        Outgoing(destination(env, happy_end=ctx.happy_end), encode_envelope(env), env.id)
        for env in results.envelopes
    )
    if results.fanned_out:
        return Decision(Outcome.FAN_OUT, publish)
    exhausted = results.envelopes[0].route.exhausted
    return Decision(Outcome.HAPPY_END if exhausted else Outcome.FORWARDED, publish)


def unroutable(process: Process, ctx: RoutingContext, routing_key: str) -> Decision:
    """The broker returned a publish to ``routing_key``: send the input to error-end instead."""
    return _error_end(
        ctx,
        process.envelope,
        ErrorCode.UNROUTABLE,
        f"no queue is bound to {routing_key!r} on the exchange; is the actor deployed?",
        details={"destination": routing_key},
    )


def cancelled(process: Process) -> Decision:
    """The message's job was cancelled (before or while it ran): ack it, publish nothing, not
    even to error-end (the gateway already ended the job)."""
    return Decision(Outcome.CANCELLED, reason=f"job {process.job_id} cancelled")
