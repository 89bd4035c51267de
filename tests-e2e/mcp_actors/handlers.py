"""A slow multi-step tool for the third-party MCP client tests: each step works in small slices,
reporting its progress after each, so a client sees notifications while a call waits and can
give up on a job that is still in its first step. With ``trace`` (a file path) in the payload,
each step appends a line to that file as it starts and as it ends, so a test can tell which
steps of a job ran."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from asya_runtime import progress

SLICE = 0.25
"""Seconds of work between two progress reports."""


def _trace(payload: dict[str, Any], line: str) -> None:
    if "trace" in payload:
        with Path(payload["trace"]).open("a") as trace:
            trace.write(line + "\n")


def _work(payload: dict[str, Any], step: str) -> dict[str, Any]:
    _trace(payload, f"{step} started")
    slices = max(1, round(float(payload.get("seconds", 2)) / SLICE))
    for done in range(slices):
        time.sleep(SLICE)
        progress((done + 1) / slices, f"{step}: slice {done + 1} of {slices}")
    _trace(payload, f"{step} ended")
    return {**payload, "steps": [*payload.get("steps", []), step]}


def first(payload: dict[str, Any]) -> dict[str, Any]:
    return _work(payload, "first")


def second(payload: dict[str, Any]) -> dict[str, Any]:
    return _work(payload, "second")
