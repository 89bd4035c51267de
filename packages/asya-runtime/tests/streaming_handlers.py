"""Streaming handlers for the runtime's tests (``streaming_handlers:<name>``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asya_runtime import AsyaError, batch, final, progress, streaming

closed = threading.Event()
"""Set by the generators below when their ``finally`` runs (the runtime closed them)."""


@streaming
def words(payload: dict[str, Any]) -> Iterator[str]:
    text = payload["text"]
    yield from text.split()
    return {"text": text, "words": len(text.split())}


@streaming
def words_final(payload: dict[str, Any]) -> Iterator[Any]:
    yield "a"
    yield final({"via": "final"})
    yield "never sent"  # pragma: no cover - the generator is closed after final()


@streaming
async def async_words(payload: dict[str, Any]) -> AsyncIterator[Any]:
    for word in payload["text"].split():
        await asyncio.sleep(0)
        yield word
    progress(1.0, "all words")
    yield final({"count": len(payload["text"].split())})


@streaming
async def async_no_final(payload: dict[str, Any]) -> AsyncIterator[str]:
    yield "only"


@streaming
def fan_out_at_the_end(payload: dict[str, Any]) -> Iterator[Any]:
    yield "thinking"
    return [{"n": 1}, {"n": 2}]


@streaming
def fails_mid_stream(payload: dict[str, Any]) -> Iterator[str]:
    yield "one"
    yield "two"
    raise AsyaError("gave_up", "after two words")


@streaming
async def async_fails_mid_stream(payload: dict[str, Any]) -> AsyncIterator[str]:
    yield "one"
    raise ValueError("async broke")


@streaming
def not_json(payload: dict[str, Any]) -> Iterator[Any]:
    yield {"fine": True}
    yield object()


@streaming
def endless(payload: dict[str, Any]) -> Iterator[int]:
    closed.clear()
    n = 0
    try:
        while True:
            time.sleep(0.01)
            n += 1
            yield n
    finally:
        closed.set()


@streaming
async def async_endless(payload: dict[str, Any]) -> AsyncIterator[int]:
    closed.clear()
    try:
        yield 1
        await asyncio.sleep(3600)
        yield 2  # pragma: no cover - cancelled
    finally:
        closed.set()


@streaming
def not_a_generator(payload: dict[str, Any]) -> str:
    return "no"


@batch(max_size=4)
@streaming
def streaming_batch(payloads: list[Any]) -> Iterator[Any]:  # pragma: no cover - refused
    yield payloads
