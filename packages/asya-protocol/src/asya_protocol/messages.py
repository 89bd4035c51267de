"""Runtime socket messages: what the sidecar sends and what the runtime answers.

Request frames carry the raw payload JSON. The runtime answers each request with zero or more
progress frames (only on a connection that negotiated the ``progress`` feature) and partial
results (only with the ``partial`` feature), then exactly one final frame: :class:`OkReply` or
:class:`ErrorReply`.

Control frames are an extension that cannot be mistaken for a payload: their body is ``!``
followed by a JSON object, which is never valid JSON. A runtime that implements only the base
protocol answers them with a ``parse_error`` reply, which tells the sidecar to stay on the base
protocol (and still proves the runtime is alive).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

import msgspec

from .errors import ArgumentError, EnvelopeError, NestingTooDeepError, ProtocolError
from .limits import MAX_JSON_DEPTH, check_json

__all__ = [
    "CONTROL_PREFIX",
    "ERROR_CODE_DESCRIPTIONS",
    "ERROR_CODE_PATTERN",
    "PROTOCOL_VERSION",
    "BatchLimits",
    "ControlRequest",
    "ErrorCode",
    "ErrorReply",
    "Feature",
    "HandlerMode",
    "HelloResult",
    "OkReply",
    "PartialReply",
    "ProgressReply",
    "Reply",
    "decode_control",
    "decode_reply",
    "decode_request",
    "encode_control",
    "encode_error",
    "encode_ok",
    "encode_ok_raw",
    "encode_partial",
    "encode_partial_raw",
    "encode_progress",
    "is_control_frame",
    "validate_error_code",
]

PROTOCOL_VERSION = 1
CONTROL_PREFIX = b"!"


class ErrorCode(StrEnum):
    """Error codes with a defined meaning. Handlers may choose other codes of the same shape."""

    PARSE_ERROR = "parse_error"
    HANDLER_ERROR = "handler_error"
    SERIALIZATION_ERROR = "serialization_error"
    FRAME_TOO_LARGE = "frame_too_large"
    PROTOCOL_ERROR = "protocol_error"
    TIMEOUT = "timeout"
    ROUTE_ERROR = "route_error"
    RUNTIME_UNAVAILABLE = "runtime_unavailable"
    REDELIVERY_LIMIT = "redelivery_limit"
    UNROUTABLE = "unroutable"
    NOT_READY = "not_ready"


ERROR_CODE_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.PARSE_ERROR: "A body is not valid JSON: a request frame at the runtime, or a "
    "queue message that is not a valid envelope at the sidecar.",
    ErrorCode.HANDLER_ERROR: "The handler raised an exception (its type and a bounded "
    "traceback are in details).",
    ErrorCode.SERIALIZATION_ERROR: "The handler's result cannot be encoded as JSON.",
    ErrorCode.FRAME_TOO_LARGE: "A frame (request or result) is over the size limit.",
    ErrorCode.PROTOCOL_ERROR: "A frame breaks the protocol (unknown control op, a reply of the "
    "wrong shape, envelope mode without negotiation).",
    ErrorCode.TIMEOUT: "The runtime did not answer within the sidecar's runtime timeout.",
    ErrorCode.ROUTE_ERROR: "The envelope's route is invalid or does not point at this actor.",
    ErrorCode.RUNTIME_UNAVAILABLE: "The runtime could not be reached or dropped the connection "
    "and the message was not retried.",
    ErrorCode.REDELIVERY_LIMIT: "The message was delivered too many times without finishing "
    "(it crashes its actor): it is parked in error-end instead of looping.",
    ErrorCode.UNROUTABLE: "The next step's queue does not exist, so the broker could not "
    "route the result.",
    ErrorCode.NOT_READY: "The runtime is not ready (a handler holds its slot past the "
    "runtime timeout): it answers ping and new requests with this code until it is ready again "
    "or exits; the sidecar gives such a message back instead of failing it.",
}

ERROR_CODE_PATTERN = r"[a-z][a-z0-9_]{0,63}"
"""An error code, unanchored: lower snake case, at most 64 characters."""
_ERROR_CODE = re.compile(ERROR_CODE_PATTERN)


def validate_error_code(code: str) -> str:
    """Error codes are lower-case snake case, at most 64 characters."""
    if not _ERROR_CODE.fullmatch(code):
        raise ProtocolError(f"invalid error code {code!r}: use lower_snake_case, <= 64 chars")
    return code


class Feature(StrEnum):
    PROGRESS = "progress"
    ENVELOPE = "envelope"
    BATCH = "batch"
    PARTIAL = "partial"


class HandlerMode(StrEnum):
    PAYLOAD = "payload"
    ENVELOPE = "envelope"


class OkReply(msgspec.Struct, frozen=True, kw_only=True):
    """``{"status": "ok", "result": ...}``; ``result`` kept as raw JSON bytes."""

    result: msgspec.Raw

    def result_value(self) -> Any:
        return msgspec.json.decode(self.result)

    def fan_out(self) -> list[msgspec.Raw] | None:
        """The elements if ``result`` is a JSON array (fan-out), else ``None``."""
        raw = bytes(self.result).lstrip()
        if not raw.startswith(b"["):
            return None
        return _raw_list_decoder.decode(raw)


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    """``{"error": code, "message": text}`` plus optional ``retryable`` and ``details``."""

    error: str
    message: str
    retryable: bool | None = None
    details: dict[str, Any] | None = None


class ProgressReply(msgspec.Struct, frozen=True, kw_only=True):
    """``{"status": "progress", "progress": 0.5, "message": "..."}``: not final."""

    progress: float | None = None
    message: str | None = None


class PartialReply(msgspec.Struct, frozen=True, kw_only=True):
    """``{"status": "partial", "partial": <any JSON>}``: one partial result, not final (only on
    a connection that negotiated the ``partial`` feature); ``partial`` kept as raw JSON."""

    partial: msgspec.Raw

    def value(self) -> Any:
        return msgspec.json.decode(self.partial)


Reply = OkReply | ErrorReply | ProgressReply | PartialReply


class _WireReply(msgspec.Struct, kw_only=True):
    status: str | None = None
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: str | None = None
    message: str | None = None
    retryable: bool | None = None
    details: dict[str, Any] | None = None
    progress: float | None = None
    partial: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_reply_decoder = msgspec.json.Decoder(_WireReply)
_request_decoder = msgspec.json.Decoder()
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()


def decode_request(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a request frame (a payload, or an envelope in envelope mode) into Python objects.

    Raises :class:`EnvelopeError` (answer it with ``parse_error``) when the body is not valid
    UTF-8 JSON or nests deeper than ``max_depth`` (:class:`NestingTooDeepError`, checked
    before decoding, so no request can make the decoder recurse too far).
    """
    check_json(body, max_depth=max_depth, what="request")
    try:
        return _request_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"request is not valid JSON: {exc}") from None


def decode_reply(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Reply:
    """Decode a runtime reply frame. Raises :class:`ProtocolError` on anything else.

    A ``result`` that nests deeper than ``max_depth`` or a reply that is not valid UTF-8 raises
    :class:`EnvelopeError` (a ``ProtocolError``): the result is refused before it is decoded.
    """
    try:
        check_json(body, max_depth=max_depth + 1, what="runtime reply")
    except NestingTooDeepError as exc:
        raise NestingTooDeepError("runtime result", exc.depth - 1, max_depth) from None
    try:
        wire = _reply_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"runtime reply is not a valid reply object: {exc}") from None
    if wire.error is not None:
        return ErrorReply(
            error=wire.error,
            message=wire.message or "",
            retryable=wire.retryable,
            details=wire.details,
        )
    if wire.status == "ok":
        if isinstance(wire.result, msgspec.UnsetType):
            raise ProtocolError("runtime reply has status 'ok' but no 'result'")
        return OkReply(result=wire.result)
    if wire.status == "progress":
        if wire.progress is not None and not 0.0 <= wire.progress <= 1.0:
            raise ProtocolError(f"progress {wire.progress} is outside 0..1")
        return ProgressReply(progress=wire.progress, message=wire.message)
    if wire.status == "partial":
        if isinstance(wire.partial, msgspec.UnsetType):
            raise ProtocolError("runtime reply has status 'partial' but no 'partial'")
        return PartialReply(partial=wire.partial)
    raise ProtocolError(f"runtime reply has neither 'error' nor a known status: {wire.status!r}")


def encode_ok(result: Any) -> bytes:
    """Encode a success reply. Raises ``TypeError``/``msgspec.EncodeError`` if not JSON-able."""
    return _encoder.encode({"status": "ok", "result": result})


def encode_ok_raw(result: bytes) -> bytes:
    """Encode a success reply around a result that is already JSON bytes."""
    return b'{"status":"ok","result":' + result + b"}"


def encode_error(
    code: str,
    message: str,
    *,
    retryable: bool | None = None,
    details: dict[str, Any] | None = None,
) -> bytes:
    reply: dict[str, Any] = {"error": code, "message": message}
    if retryable is not None:
        reply["retryable"] = retryable
    if details:
        reply["details"] = details
    return _encoder.encode(reply)


def encode_progress(progress: float | None = None, message: str | None = None) -> bytes:
    if progress is not None and not 0.0 <= progress <= 1.0:
        raise ArgumentError(f"progress must be within 0..1, got {progress}")
    reply: dict[str, Any] = {"status": "progress"}
    if progress is not None:
        reply["progress"] = progress
    if message is not None:
        reply["message"] = message
    return _encoder.encode(reply)


def encode_partial(value: Any) -> bytes:
    """Encode a partial result. Raises ``TypeError``/``msgspec.EncodeError`` if not JSON-able."""
    return _encoder.encode({"status": "partial", "partial": value})


def encode_partial_raw(value: bytes) -> bytes:
    """Encode a partial result that is already JSON bytes."""
    return b'{"status":"partial","partial":' + value + b"}"


# --- control frames ---------------------------------------------------------------------------


class ControlRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``!{"op": "hello", "protocol": 1, "features": [...]}`` or ``!{"op": "ping"}``."""

    op: Literal["hello", "ping"]
    protocol: int = PROTOCOL_VERSION
    features: tuple[str, ...] = ()


class HelloResult(msgspec.Struct, frozen=True, kw_only=True):
    """The ``result`` of an ok reply to ``hello``: what this connection now speaks."""

    protocol: int
    mode: HandlerMode = HandlerMode.PAYLOAD
    features: tuple[str, ...] = ()
    runtime: str = ""
    batch: BatchLimits | None = None
    """With the ``batch`` feature: the handler's limits (``asya_protocol.batch``)."""


class BatchLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The ``batch`` object of a ``hello`` result: at most ``max_size`` items per request, and
    the longest the handler wants a sidecar to wait for a batch to fill, in milliseconds."""

    max_size: int
    max_wait_ms: float = 0.0


_control_decoder = msgspec.json.Decoder(ControlRequest)


def is_control_frame(body: bytes) -> bool:
    return body[:1] == CONTROL_PREFIX


def encode_control(request: ControlRequest) -> bytes:
    return CONTROL_PREFIX + _encoder.encode(request)


def decode_control(body: bytes) -> ControlRequest:
    if not is_control_frame(body):
        raise ProtocolError("not a control frame")
    try:
        return _control_decoder.decode(body[1:])
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"invalid control frame: {exc}") from None
