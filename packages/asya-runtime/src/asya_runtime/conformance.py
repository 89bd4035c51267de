"""The conformance handler (spec in ``asya_protocol.conformance``), for
``ASYA_HANDLER=asya_runtime.conformance:handler``: lets anyone check a deployed runtime."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from .api import progress
from .batching import batch
from .errors import AsyaError
from .streaming import streaming

__all__ = ["batch_handler", "handler", "streaming_handler"]


class ConformanceCrash(RuntimeError):
    """What ``{"op": "raise"}`` raises: an ordinary exception, as a buggy handler would."""


def handler(payload: dict[str, Any]) -> Any:
    op = payload.get("op")
    if op == "echo":
        return payload.get("value")
    if op == "fanout":
        return list(payload["values"])
    if op == "fail":
        raise AsyaError(payload["code"], payload["message"])
    if op == "raise":
        raise ConformanceCrash(payload["message"])
    if op == "progress":
        steps = int(payload["steps"])
        for i in range(steps):
            progress((i + 1) / steps, f"step {i + 1} of {steps}")
        return steps
    if op == "sleep":
        time.sleep(float(payload["seconds"]))
        return payload.get("value")
    raise AsyaError("unknown_op", f"the conformance handler has no op {op!r}")


@batch(max_size=8, max_wait=0.005)
def batch_handler(payloads: list[dict[str, Any]]) -> list[Any]:
    """The conformance handler as a batch handler (``asya_runtime.conformance:batch_handler``):
    each item's op as above; ``fail`` fails that item alone, ``raise`` the whole batch."""
    results: list[Any] = []
    for payload in payloads:
        if payload.get("op") == "raise":
            raise ConformanceCrash(payload["message"])
        try:
            results.append(handler(payload))
        except AsyaError as exc:
            results.append(exc)
    return results


@streaming
def streaming_handler(payload: dict[str, Any]) -> Generator[Any, None, Any]:
    """The conformance handler as a streaming handler
    (``asya_runtime.conformance:streaming_handler``): ``{"op": "stream", "values": [..],
    "value": V}`` yields each value as a partial result, then returns ``V`` (or, with ``code``
    and ``message``, fails so); every other op answers as it does alone."""
    if payload.get("op") != "stream":
        return handler(payload)
    yield from payload["values"]
    if "code" in payload:
        raise AsyaError(payload["code"], payload["message"])
    return payload.get("value")
