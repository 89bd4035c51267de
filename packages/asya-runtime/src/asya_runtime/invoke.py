"""Call a handler the way its kind needs, and turn the outcome into a reply frame body."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from asya_protocol import ErrorCode, encode_error, encode_ok

from .errors import AsyaError
from .loader import Handler, HandlerKind
from .streaming import Emit, drive_async, drive_sync

__all__ = ["call_handler", "error_reply_for", "ok_reply_for", "run_sync"]

log = logging.getLogger("asya_runtime")


_PLAIN = (dict, list, str, int, float, bool, type(None))


def _materialise(result: Any) -> Any:
    """A generator (or other one-shot iterator) returned by a plain function is fan-out too."""
    if type(result) in _PLAIN:  # the usual results, told apart without the ABC's check
        return result
    if isinstance(result, Iterator):
        return list(result)
    return result


def run_sync(handler: Handler, value: Any) -> Any:
    """Call a ``def`` handler (a function or a generator) in this thread."""
    if handler.kind is HandlerKind.GENERATOR:
        return list(handler.function(value))
    return _materialise(handler.function(value))


async def call_handler(
    handler: Handler,
    value: Any,
    *,
    executor: ThreadPoolExecutor,
    context: contextvars.Context,
    emit: Emit = None,
) -> Any:
    """Run an ``async`` or streaming handler on ``value`` inside ``context``; fan-out results
    come back as a list. A streaming handler's partial results go to ``emit`` (dropped when it is
    None); a streaming ``def`` generator's steps run in ``executor``. Any other ``def`` handler is
    served by its connection's thread, with :func:`run_sync`."""
    if handler.streaming:
        return await _stream(handler, value, executor=executor, context=context, emit=emit)
    if handler.kind is HandlerKind.ASYNC:
        result = await asyncio.create_task(handler.function(value), context=context)
        return _materialise(result)
    if handler.kind is HandlerKind.ASYNC_GENERATOR:

        async def collect() -> list[Any]:
            return [item async for item in handler.function(value)]

        return await asyncio.create_task(collect(), context=context)
    raise TypeError(f"{handler.name} is a {handler.kind.value} handler: call it with run_sync")


async def _stream(
    handler: Handler,
    value: Any,
    *,
    executor: ThreadPoolExecutor,
    context: contextvars.Context,
    emit: Emit,
) -> Any:
    generator = context.run(handler.function, value)  # runs no handler code yet
    if handler.kind is HandlerKind.ASYNC_GENERATOR:
        result = await asyncio.create_task(drive_async(generator, emit), context=context)
    else:
        result = await drive_sync(generator, emit, executor=executor, context=context)
    return _materialise(result)


def error_reply_for(exc: BaseException, *, traceback_limit: int) -> bytes:
    """The error frame body for an exception raised by a handler."""
    if isinstance(exc, AsyaError):
        return encode_error(exc.code, exc.message, retryable=exc.retryable, details=exc.details)
    text = "".join(traceback.format_exception(exc))
    if len(text) > traceback_limit:
        text = "..." + text[-traceback_limit:]
    details = {"type": f"{type(exc).__module__}.{type(exc).__qualname__}", "traceback": text}
    message = str(exc) or type(exc).__name__
    return encode_error(ErrorCode.HANDLER_ERROR, message, details=details)


def ok_reply_for(result: Any) -> bytes:
    """The ok frame body, or a ``serialization_error`` frame if ``result`` is not JSON-able."""
    try:
        return encode_ok(result)
    # RecursionError: a result nested about a thousand deep cannot be encoded at all.
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
        log.warning("handler result cannot be encoded as JSON: %s", exc)
        return encode_error(
            ErrorCode.SERIALIZATION_ERROR,
            f"handler result cannot be encoded as JSON: {exc}",
            details={"type": type(result).__name__},
        )
