"""Batch handlers: ``@batch(max_size=16, max_wait=0.01)`` on a function taking a list of payloads
and returning a list of results of the same length, in order.

A result that is an exception instance (an :class:`~asya_runtime.AsyaError` or any other) fails
that item alone; an exception raised fails the whole batch. The runtime advertises the limits in
its ``hello`` reply (the ``batch`` feature) and a sidecar that negotiates it sends up to
``max_size`` payloads per request; a sidecar that does not sends one payload per request, and the
handler is called with a list of one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from asya_protocol import BatchLimits, ErrorCode, encode_batch_ok, encode_error, encode_ok_raw

__all__ = ["BATCH_ATTRIBUTE", "BatchSpec", "batch", "batch_reply", "batch_spec"]

BATCH_ATTRIBUTE = "__asya_batch__"
MAX_BATCH_SIZE = 10_000

F = TypeVar("F", bound=Callable[..., Any])

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class BatchSpec:
    max_size: int
    max_wait: float
    """Seconds a sidecar may wait for a batch to fill after its first payload."""

    def limits(self) -> BatchLimits:
        return BatchLimits(max_size=self.max_size, max_wait_ms=self.max_wait * 1000)


def batch(*, max_size: int, max_wait: float = 0.0) -> Callable[[F], F]:
    """Declare that the decorated handler takes a list of up to ``max_size`` payloads and
    returns a list of as many results; ``max_wait`` (seconds) bounds how long a sidecar waits
    for a batch to fill."""
    if isinstance(max_size, bool) or not isinstance(max_size, int):
        raise TypeError(f"batch max_size must be an integer, got {max_size!r}")
    if not 1 <= max_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch max_size must be within 1..{MAX_BATCH_SIZE}, got {max_size}")
    if not 0.0 <= max_wait <= 60.0:
        raise ValueError(f"batch max_wait must be within 0..60 seconds, got {max_wait}")
    spec = BatchSpec(max_size=max_size, max_wait=float(max_wait))

    def mark(function: F) -> F:
        setattr(function, BATCH_ATTRIBUTE, spec)
        return function

    return mark


def batch_spec(function: Callable[..., Any]) -> BatchSpec | None:
    """The spec set by :func:`batch` (on a function, a bound method or a callable object)."""
    spec = getattr(function, BATCH_ATTRIBUTE, None)
    return spec if isinstance(spec, BatchSpec) else None


def batch_reply(
    results: Any,
    size: int,
    *,
    batched: bool,
    error_for: Callable[[BaseException], bytes],
) -> bytes:
    """The final frame body for a batch handler's ``results`` on ``size`` items: a batch reply
    when the connection ``batched``, else the one item's ordinary reply."""
    if isinstance(results, Iterator):
        results = list(results)
    if not isinstance(results, list | tuple) or len(results) != size:
        got = f"{len(results)} results" if isinstance(results, list | tuple) else repr(results)
        return encode_error(
            ErrorCode.PROTOCOL_ERROR,
            f"the batch handler returned {got[:200]} for {size} item(s); it must return a list "
            "of one result per payload, in order",
        )
    bodies: list[bytes | None] = []
    errors: dict[int, bytes] = {}
    for i, item in enumerate(results):
        if isinstance(item, BaseException):
            errors[i] = error_for(item)
            bodies.append(None)
            continue
        body, error = _encode_item(item)
        bodies.append(body)
        if error is not None:
            errors[i] = error
    if batched:
        return encode_batch_ok(bodies, errors)
    return errors[0] if 0 in errors else encode_ok_raw(bodies[0] or b"null")


def _encode_item(item: Any) -> tuple[bytes | None, bytes | None]:
    if isinstance(item, Iterator):
        item = list(item)
    try:
        return _encoder.encode(item), None
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
        return None, encode_error(
            ErrorCode.SERIALIZATION_ERROR,
            f"handler result cannot be encoded as JSON: {exc}",
            details={"type": type(item).__name__},
        )
