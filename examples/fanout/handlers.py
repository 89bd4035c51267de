"""Fan-out: split a text into words (one message each), then shout every word on its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def split(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for n, word in enumerate(payload["text"].split(), start=1):
        yield {"chunk": n, "text": word}


def shout(payload: dict[str, Any]) -> dict[str, Any]:
    return {"chunk": payload["chunk"], "text": payload["text"].upper()}
