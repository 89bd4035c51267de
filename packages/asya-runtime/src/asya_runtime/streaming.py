"""Streaming handlers: ``@streaming`` on a generator (``def`` or ``async def``) whose yields are
partial results, sent to the sidecar as they come, before the final result.

The final result is what ``yield final(value)`` gives (in either kind of generator; the
generator is closed right after it), or a ``def`` generator's ``return value``. A generator that
ends without either gives ``None``. The final result means what a returned value means (a list
is fan-out). Without ``@streaming`` a generator keeps its older meaning: each yielded item is one
fan-out result.

Partial results travel only on a connection that negotiated the ``partial`` feature; elsewhere
they are dropped (not even encoded) and only the final result is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

__all__ = ["STREAMING_ATTRIBUTE", "Final", "drive_async", "drive_sync", "final", "streaming"]

STREAMING_ATTRIBUTE = "__asya_streaming__"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

Emit = Callable[[Any], Awaitable[None]] | None
"""Sends one partial result (None: the connection did not negotiate ``partial``)."""


def streaming(function: F) -> F:
    """Declare that the decorated generator streams partial results (see the module)."""
    setattr(function, STREAMING_ATTRIBUTE, True)
    return function


def is_streaming(function: Callable[..., Any]) -> bool:
    return getattr(function, STREAMING_ATTRIBUTE, False) is True


class Final(Generic[T]):
    """What :func:`final` wraps: the last yield of a streaming handler, its final result."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"final({self.value!r})"


def final(value: T) -> Final[T]:
    """``yield final(value)`` ends a streaming handler with ``value`` as its result."""
    return Final(value)


async def drive_async(generator: AsyncGenerator[Any, None], emit: Emit) -> Any:
    """Run an async streaming generator to its final result; always closed at the end
    (cancellation included: it runs on in the task that is cancelled)."""
    try:
        async for item in generator:
            if isinstance(item, Final):
                return item.value
            if emit is not None:
                await emit(item)
        return None
    finally:
        await generator.aclose()


def _step(generator: Generator[Any, None, Any]) -> tuple[bool, Any]:
    """One ``next()``: (True, the final result) or (False, a partial result)."""
    try:
        item = next(generator)
    except StopIteration as stop:
        return True, stop.value
    if isinstance(item, Final):
        return True, item.value
    return False, item


async def drive_sync(
    generator: Generator[Any, None, Any],
    emit: Emit,
    *,
    executor: ThreadPoolExecutor,
    context: contextvars.Context,
) -> Any:
    """Run a ``def`` streaming generator, one step at a time in the handler threads, to its final
    result. Between two steps it can be stopped: cancelled (the sidecar gave up, the timeout),
    it waits for the step under way (a thread cannot be interrupted), closes the generator (its
    ``finally`` blocks run, in a handler thread) and ends cancelled."""
    loop = asyncio.get_running_loop()

    async def in_thread(call: Callable[..., T], *args: Any) -> T:
        future = loop.run_in_executor(executor, context.run, call, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await future  # the step under way ends first; what it raised is not the reply
            raise

    try:
        while True:
            done, item = await in_thread(_step, generator)
            if done:
                return item
            if emit is not None:
                await emit(item)
    finally:
        await in_thread(generator.close)
