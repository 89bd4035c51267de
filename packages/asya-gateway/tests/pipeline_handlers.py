"""Handlers for the gateway's end-to-end tests (served by real asya-runtime processes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from asya_runtime import AsyaError, progress


def preprocess(payload: dict[str, Any]) -> dict[str, Any]:
    return {"tokens": [1, 2, 3] if payload["text"] == "Hello world" else [1]}


def inference(payload: dict[str, Any]) -> dict[str, Any]:
    progress(0.5, "thinking")
    return {"prediction": "greeting" if len(payload["tokens"]) == 3 else "unknown"}


def postprocess(payload: dict[str, Any]) -> dict[str, Any]:
    return {"result": f"Classified as {payload['prediction']}"}


def split(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for n, word in enumerate(payload["text"].split(), start=1):
        yield {"chunk": n, "text": word}


def shout(payload: dict[str, Any]) -> dict[str, Any]:
    if payload["text"] == "fail":
        raise AsyaError("refused", "this branch refuses")
    return {"chunk": payload["chunk"], "text": payload["text"].upper()}


def fails(payload: dict[str, Any]) -> None:
    raise ValueError("the model is broken")


def slow(payload: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(payload.get("seconds", 5)))
    return payload
