"""A step that fails, to see what a failure looks like: error-end, the job's error, the hint."""

from __future__ import annotations

from typing import Any

from asya_runtime import AsyaError


def check(payload: dict[str, Any]) -> dict[str, Any]:
    if not payload.get("text"):
        raise AsyaError("empty_input", "there is no text to work on", retryable=False)
    return payload


def explode(payload: dict[str, Any]) -> None:
    raise RuntimeError("the model file is missing")
