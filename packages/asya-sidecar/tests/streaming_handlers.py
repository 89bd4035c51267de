"""Streaming handlers for the sidecar's tests (``streaming_handlers:<name>``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from asya_runtime import streaming


@streaming
def words(payload: dict[str, Any]) -> Iterator[Any]:
    """Each word as a partial result (``big`` adds one of that many bytes), then the text."""
    yield from payload["text"].split()
    if "big" in payload:
        yield "x" * int(payload["big"])
        yield "after"
    return {"text": payload["text"].upper()}
