"""Load the user's handler named by ``ASYA_HANDLER`` and classify how to call it."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .batching import BatchSpec, batch_spec
from .errors import HandlerLoadError
from .streaming import is_streaming

__all__ = ["Handler", "HandlerKind", "load_handler"]

_VARIABLE = "ASYA_HANDLER"


class HandlerKind(Enum):
    SYNC = "def"
    ASYNC = "async def"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async generator"


@dataclass(frozen=True)
class Handler:
    name: str
    function: Callable[..., Any]
    kind: HandlerKind
    batch: BatchSpec | None = None
    """Set by :func:`~asya_runtime.batch`: the handler takes a list of payloads."""
    streaming: bool = False
    """Set by :func:`~asya_runtime.streaming`: its yields are partial results."""


def _kind(function: Callable[..., Any]) -> HandlerKind:
    target = inspect.unwrap(function)
    call = getattr(target, "__call__", None)  # noqa: B004 - callable objects with async __call__
    if inspect.isasyncgenfunction(target) or inspect.isasyncgenfunction(call):
        return HandlerKind.ASYNC_GENERATOR
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call):
        return HandlerKind.ASYNC
    if inspect.isgeneratorfunction(target) or inspect.isgeneratorfunction(call):
        return HandlerKind.GENERATOR
    return HandlerKind.SYNC


def load_handler(spec: str) -> Handler:
    """``package.module:function`` or ``package.module:Class.method``.

    For ``Class.method`` the class is built once, with no arguments, and the bound method is
    the handler. Every failure raises :class:`HandlerLoadError` naming ``ASYA_HANDLER``.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise HandlerLoadError(_VARIABLE, f"{spec!r} is not of the form package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerLoadError(
            _VARIABLE, f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    parts = attr_path.split(".")
    if len(parts) > 2 or not all(parts):
        raise HandlerLoadError(_VARIABLE, f"{attr_path!r}: use function or Class.method")
    try:
        target: Any = getattr(module, parts[0])
    except AttributeError:
        raise HandlerLoadError(
            _VARIABLE, f"module {module_name!r} has no attribute {parts[0]!r}"
        ) from None
    if len(parts) == 2:
        if not inspect.isclass(target):
            raise HandlerLoadError(_VARIABLE, f"{parts[0]!r} is not a class")
        try:
            instance = target()
        except Exception as exc:
            raise HandlerLoadError(
                _VARIABLE, f"{parts[0]}() failed: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            target = getattr(instance, parts[1])
        except AttributeError:
            raise HandlerLoadError(
                _VARIABLE, f"class {parts[0]!r} has no attribute {parts[1]!r}"
            ) from None
    if not callable(target):
        raise HandlerLoadError(_VARIABLE, f"{attr_path!r} in {module_name!r} is not callable")
    return _handler(spec, attr_path, target)


def _handler(spec: str, attr_path: str, target: Callable[..., Any]) -> Handler:
    kind = _kind(target)
    batching = batch_spec(target)
    if batching is not None and kind in (HandlerKind.GENERATOR, HandlerKind.ASYNC_GENERATOR):
        raise HandlerLoadError(
            _VARIABLE,
            f"{attr_path!r} is a {kind.value} marked @batch: a batch handler returns a list of "
            "results (one per payload), so it cannot be a generator",
        )
    generator = kind in (HandlerKind.GENERATOR, HandlerKind.ASYNC_GENERATOR)
    streams = is_streaming(target)
    if streams and not generator:
        raise HandlerLoadError(
            _VARIABLE,
            f"{attr_path!r} is a {kind.value} marked @streaming: only a generator (def or "
            "async def with yield) can stream partial results",
        )
    return Handler(name=spec, function=target, kind=kind, batch=batching, streaming=streams)
