"""Handlers served by real asya-runtime processes in the sidecar's tests."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from asya_runtime import AsyaError, batch, progress

_barrier = threading.Barrier(int(os.environ.get("TEST_BARRIER", "4")), timeout=20)


def preprocess(payload: dict[str, Any]) -> dict[str, Any]:
    return {"tokens": [1, 2, 3] if payload["text"] == "Hello world" else []}


def inference(payload: dict[str, Any]) -> dict[str, Any]:
    progress(0.5, "thinking")
    return {"prediction": "greeting" if payload["tokens"] == [1, 2, 3] else "unknown"}


def postprocess(payload: dict[str, Any]) -> dict[str, Any]:
    return {"result": f"Classified as {payload['prediction']}"}


def split(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for n, word in enumerate(payload["text"].split(), start=1):
        yield {"chunk": n, "text": word}


def upper(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "text": payload["text"].upper()}


def fails(payload: dict[str, Any]) -> None:
    raise ValueError(f"cannot handle {sorted(payload)}")


def slow(payload: dict[str, Any]) -> Any:
    time.sleep(float(payload.get("seconds", 0)))
    return payload


def flaky(payload: dict[str, Any]) -> dict[str, Any]:
    """Fails (retryable) until it has been called ``fail_times`` times for this key."""
    path = os.path.join(os.environ["TEST_STATE_DIR"], str(payload["key"]))
    calls = int(open(path).read()) if os.path.exists(path) else 0  # noqa: SIM115
    with open(path, "w") as f:
        f.write(str(calls + 1))
    if calls < int(payload["fail_times"]):
        raise AsyaError("model_busy", f"busy on call {calls + 1}", retryable=True)
    return {"key": payload["key"], "calls": calls + 1}


def crash_on_poison(payload: dict[str, Any]) -> dict[str, Any]:
    """Kills its whole runtime process when it sees the poison payload."""
    if payload.get("poison"):
        os._exit(17)
    return payload


def barrier(payload: dict[str, Any]) -> dict[str, Any]:
    _barrier.wait()
    return payload


def echo(payload: Any) -> Any:
    return payload


def raw_result(payload: dict[str, Any]) -> Any:
    """Returns ``payload["hex"]`` decoded as raw JSON bytes, passed through unchecked (as a
    third-party runtime might send them): invalid UTF-8 or deep nesting reach the sidecar."""
    return msgspec.Raw(bytes.fromhex(payload["hex"]))


def big_result(payload: dict[str, Any]) -> dict[str, Any]:
    """Returns ``payload["size"]`` bytes of text, counting its calls per ``key`` in
    ``TEST_STATE_DIR`` (to tell one run from several)."""
    path = os.path.join(os.environ["TEST_STATE_DIR"], str(payload["key"]))
    with open(path, "a") as f:
        f.write("x")
    return {"key": payload["key"], "data": "x" * int(payload["size"])}


async def forever_or_fast(payload: dict[str, Any]) -> Any:
    """``{"fast": x}`` answers x; anything else waits forever. When cancelled it leaves
    ``payload["i"]`` as a file in ``TEST_STATE_DIR``."""
    if "fast" in payload:
        return payload["fast"]
    try:
        await asyncio.Event().wait()
    finally:
        (Path(os.environ["TEST_STATE_DIR"]) / str(payload["i"])).write_text("cancelled")


async def cancellable_or_fast(payload: dict[str, Any]) -> Any:
    """``{"fast": x}`` answers x; anything else leaves ``started-<i>`` in ``TEST_STATE_DIR``
    and waits forever; when cancelled it leaves ``cancelled-<i>``."""
    if "fast" in payload:
        return payload["fast"]
    marks = Path(os.environ["TEST_STATE_DIR"])
    (marks / f"started-{payload['i']}").write_text("started")
    try:
        await asyncio.Event().wait()
    finally:
        (marks / f"cancelled-{payload['i']}").write_text("cancelled")


def reporting(payload: dict[str, Any]) -> Any:
    """Reports progress ``parts`` times (``part <i>``), ``pause`` seconds apart, then answers
    its payload."""
    parts = int(payload.get("parts", 10))
    for i in range(1, parts + 1):
        progress(i / parts, f"part {i}")
        time.sleep(float(payload.get("pause", 0)))
    return payload


def sleepy(payload: dict[str, Any]) -> Any:
    """A ``def`` handler: leaves ``started-<i>`` in ``TEST_STATE_DIR``, sleeps ``sleep``
    seconds, then leaves ``ended-<i>`` and answers its payload."""
    marks = Path(os.environ["TEST_STATE_DIR"])
    (marks / f"started-{payload['i']}").write_text("started")
    time.sleep(payload.get("sleep", 0))
    (marks / f"ended-{payload['i']}").write_text("ended")
    return payload


def stuck_or_fast(payload: dict[str, Any]) -> Any:
    """``{"fast": x}`` answers x; anything else is a ``def`` handler stuck in ``time.sleep``."""
    if "fast" in payload:
        return payload["fast"]
    time.sleep(3600)
    return payload


def _log_batch(size: int) -> None:
    path = os.environ.get("BATCH_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{size}\n")


@batch(max_size=8, max_wait=0.05)
def batch_double(payloads: list[dict[str, Any]]) -> list[Any]:
    """A batch handler: doubles ``i``; ``bad`` fails the item, ``split`` fans it out, ``crash``
    fails the whole batch; every batch's size goes to the file named by BATCH_LOG."""
    _log_batch(len(payloads))
    time.sleep(float(os.environ.get("BATCH_SLEEP", "0")))
    if any(p.get("crash") for p in payloads):
        raise RuntimeError("the model crashed")
    out: list[Any] = []
    for p in payloads:
        if p.get("bad"):
            out.append(AsyaError("bad_item", f"item {p['i']} is bad"))
        elif p.get("split"):
            out.append([{"i": p["i"], "part": n} for n in range(2)])
        else:
            out.append({"i": p["i"], "double": p["i"] * 2})
    return out


@batch(max_size=8, max_wait=0.05)
def batch_short(payloads: list[Any]) -> list[Any]:
    """A broken batch handler: one result too few."""
    return payloads[1:]


@batch(max_size=8, max_wait=0.2)
async def batch_wait(payloads: list[dict[str, Any]]) -> list[Any]:
    """An async batch handler: a batch with a ``wait`` item leaves ``started`` in
    ``TEST_STATE_DIR`` and waits forever (``cancelled`` when cancelled); else doubles ``i``. A
    ``sleep`` item makes the batch sleep that long first."""
    marks = Path(os.environ["TEST_STATE_DIR"])
    (marks / f"batch-{len(payloads)}").write_text("started")
    if any(p.get("wait") for p in payloads):
        try:
            await asyncio.Event().wait()
        finally:
            (marks / "cancelled").write_text("cancelled")
    await asyncio.sleep(max(p.get("sleep", 0) for p in payloads))
    return [{"i": p["i"], "double": p["i"] * 2} for p in payloads]
