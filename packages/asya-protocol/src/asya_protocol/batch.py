"""The ``batch`` extension of the runtime socket protocol: many payloads in one exchange.

On a connection whose ``hello`` negotiated the ``batch`` feature, every request frame is
``{"batch": [item, ...]}`` (each item what the request frame would carry alone) and the final
frame is either ``{"status": "ok", "results": [r0, ...], "errors": {"2": {error reply}}}`` (one
result per item, in order; an item listed in ``errors`` failed alone and its result is ``null``)
or one error reply, which applies to every item. :func:`split_batch_reply` turns either into one
reply per item, the same replies a runtime would have sent for the items one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .errors import EnvelopeError, NestingTooDeepError, ProtocolError
from .limits import MAX_JSON_DEPTH, check_json
from .messages import (
    BatchLimits,
    ErrorCode,
    ErrorReply,
    OkReply,
    PartialReply,
    ProgressReply,
    decode_reply,
    encode_error,
)

__all__ = [
    "BATCH_DEPTH",
    "BatchLimits",
    "BatchOkReply",
    "batch_protocol_error",
    "decode_batch_reply",
    "decode_batch_request",
    "encode_batch_ok",
    "encode_batch_request",
    "split_batch_reply",
]

BATCH_DEPTH = 2
"""Levels a batch frame adds around each item: the object and the ``batch``/``results`` array."""


class BatchOkReply(msgspec.Struct, frozen=True, kw_only=True):
    """``{"status": "ok", "results": [...], "errors": {...}}``: results kept as raw JSON."""

    results: tuple[msgspec.Raw, ...]
    errors: dict[int, ErrorReply] = {}


class _WireRequest(msgspec.Struct):
    batch: list[Any]


class _WireBatchReply(msgspec.Struct, kw_only=True):
    status: str | None = None
    results: list[msgspec.Raw] | None = None
    errors: dict[str, Any] | None = None
    error: str | None = None


_request_decoder = msgspec.json.Decoder(_WireRequest)
_reply_decoder = msgspec.json.Decoder(_WireBatchReply)
_error_decoder = msgspec.json.Decoder(ErrorReply)
_encoder = msgspec.json.Encoder()


def encode_batch_request(items: Sequence[bytes]) -> bytes:
    """The request frame body for ``items``, each already a JSON body."""
    return b'{"batch":[' + b",".join(items) + b"]}"


def decode_batch_request(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> list[Any]:
    """The items of a batch request (each within ``max_depth``). Raises :class:`EnvelopeError`
    for bad JSON or too deep (answer ``parse_error``) and :class:`ProtocolError` for a body that
    is not ``{"batch": [at least one item]}`` (answer ``protocol_error``)."""
    try:
        check_json(body, max_depth=max_depth + BATCH_DEPTH, what="batch request")
    except NestingTooDeepError as exc:
        raise NestingTooDeepError("batch item", exc.depth - BATCH_DEPTH, max_depth) from None
    try:
        items = _request_decoder.decode(body).batch
    except msgspec.ValidationError as exc:
        raise ProtocolError(f'a batch request is {{"batch": [...]}}: {exc}') from None
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"batch request is not valid JSON: {exc}") from None
    if not items:
        raise ProtocolError("a batch request carries at least one item")
    return items


def encode_batch_ok(results: Sequence[bytes | None], errors: dict[int, bytes]) -> bytes:
    """A batch ok reply: ``results`` as JSON bodies (``None`` for an item in ``errors``), and
    ``errors`` as error reply bodies by item index."""
    parts = b",".join(b"null" if r is None else r for r in results)
    body = b'{"status":"ok","results":[' + parts + b"]"
    if errors:
        inner = b",".join(b'"%d":%s' % (i, e) for i, e in sorted(errors.items()))
        body += b',"errors":{' + inner + b"}"
    return body + b"}"


def decode_batch_reply(
    body: bytes, *, max_depth: int = MAX_JSON_DEPTH
) -> BatchOkReply | ErrorReply | ProgressReply:
    """Decode a final (or progress) frame of a batch exchange. Raises :class:`ProtocolError`
    for anything else (:class:`EnvelopeError` when a result is too deep or not UTF-8)."""
    try:
        check_json(body, max_depth=max_depth + BATCH_DEPTH, what="runtime reply")
    except NestingTooDeepError as exc:
        raise NestingTooDeepError("runtime result", exc.depth - BATCH_DEPTH, max_depth) from None
    try:
        wire = _reply_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"runtime reply is not a valid batch reply: {exc}") from None
    if wire.status == "partial":
        raise ProtocolError("partial results are not part of a batch exchange")
    if wire.error is not None or wire.status == "progress":
        reply = decode_reply(body, max_depth=max_depth + 1)
        if isinstance(reply, OkReply | PartialReply):  # pragma: no cover - error or progress
            raise ProtocolError("unexpected reply")
        return reply
    if wire.status != "ok" or wire.results is None:
        raise ProtocolError('a batch reply is {"status": "ok", "results": [...]} or an error')
    return BatchOkReply(results=tuple(wire.results), errors=_errors(wire.errors or {}))


def _errors(raw: dict[str, Any]) -> dict[int, ErrorReply]:
    errors: dict[int, ErrorReply] = {}
    for key, value in raw.items():
        if not key.isdigit():
            raise ProtocolError(f"batch reply errors: {key!r} is not an item index")
        try:
            errors[int(key)] = _error_decoder.decode(_encoder.encode(value))
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"batch reply errors[{key}] is not an error reply: {exc}") from None
    return errors


def split_batch_reply(reply: BatchOkReply | ErrorReply, size: int) -> list[OkReply | ErrorReply]:
    """One reply per item of a batch of ``size``: an error reply for the whole batch is every
    item's; a result list of the wrong length or an error for a missing index is a
    ``protocol_error`` for every item."""
    if isinstance(reply, ErrorReply):
        return [reply] * size
    wrong = next((i for i in reply.errors if i >= size), None)
    if len(reply.results) != size or wrong is not None:
        what = (
            f"{len(reply.results)} results for {size} items"
            if len(reply.results) != size
            else f"an error for item {wrong} of {size}"
        )
        error = ErrorReply(
            error=ErrorCode.PROTOCOL_ERROR,
            message=f"the runtime's batch reply has {what}; every item fails",
            details={"batch_size": size, "results": len(reply.results)},
        )
        return [error] * size
    return [reply.errors.get(i) or OkReply(result=r) for i, r in enumerate(reply.results)]


def batch_protocol_error(message: str) -> bytes:
    """The error reply body a runtime sends for a batch request it cannot take."""
    return encode_error(ErrorCode.PROTOCOL_ERROR, message)
