"""Handlers the runtime's tests serve, one per behaviour under test."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from asya_runtime import AsyaError, progress

_barrier = threading.Barrier(int(os.environ.get("TEST_BARRIER", "4")), timeout=10)


def preprocess(payload: dict[str, Any]) -> dict[str, Any]:
    """The seed's first step."""
    return {"tokens": [1, 2, 3] if payload["text"] == "Hello world" else []}


async def inference(payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"prediction": "greeting" if payload["tokens"] else "unknown"}


def split(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for n, word in enumerate(payload["text"].split(), start=1):
        yield {"chunk": n, "text": word}


async def async_split(payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    for n, word in enumerate(payload["text"].split(), start=1):
        await asyncio.sleep(0)
        yield {"chunk": n, "text": word}


def listed(payload: dict[str, Any]) -> list[Any]:
    return [{"chunk": 1}, {"chunk": 2}]


def one_list_result(payload: dict[str, Any]) -> list[Any]:
    """The documented way to return one list as one result: a fan-out of one element."""
    return [[1, 2, 3]]


def broken_generator(payload: dict[str, Any]) -> Iterator[int]:
    yield 1
    raise ValueError("generator broke after one item")


def fails(payload: dict[str, Any]) -> None:
    raise KeyError("missing thing")


def chooses_code(payload: dict[str, Any]) -> None:
    raise AsyaError("model_busy", "GPU queue full", retryable=True, details={"queue": 12})


def exits(payload: dict[str, Any]) -> None:
    raise SystemExit(3)


def unserialisable(payload: dict[str, Any]) -> Any:
    return {"x": object()}


def big_result(payload: dict[str, Any]) -> str:
    return "x" * int(payload["size"])


def barrier(payload: dict[str, Any]) -> str:
    """Returns only when TEST_BARRIER requests run at the same time (proves concurrency)."""
    _barrier.wait()
    return "together"


def slow(payload: dict[str, Any]) -> Any:
    threading.Event().wait(float(payload["seconds"]))
    return payload.get("value")


async def async_progress(payload: dict[str, Any]) -> str:
    for i in range(4):
        progress((i + 1) / 4, f"step {i + 1}")
        await asyncio.sleep(0)
    return "done"


def sync_progress(payload: dict[str, Any]) -> str:
    progress(0.5)
    progress(message="only a message")
    return "done"


def bad_progress(payload: dict[str, Any]) -> str:
    progress(1.5)
    return "unreachable"


def envelope_router(envelope: dict[str, Any]) -> dict[str, Any]:
    """Envelope mode: route to 'urgent' when the header says so."""
    route = envelope["route"]
    if envelope.get("headers", {}).get("priority") == "high":
        route["steps"] = [*route["steps"][: route["current"] + 1], "urgent"]
    envelope["payload"] = {"seen": envelope["payload"], "id": envelope.get("id")}
    return envelope


class Model:
    """``Class.method`` handlers: the class is built once, with no arguments."""

    instances = 0

    def __init__(self) -> None:
        Model.instances += 1
        self.weights = {"Hello": "greeting"}

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"label": self.weights.get(payload["word"], "?"), "instances": Model.instances}


class NeedsArgs:
    def __init__(self, path: str) -> None:
        self.path = path

    def predict(self, payload: Any) -> Any:
        return payload


NOT_CALLABLE = 42


def slow_marked(payload: dict[str, Any]) -> Any:
    """Like ``slow``, but first leaves a file named after the value so a test knows it started."""
    mark_dir = os.environ["TEST_MARK_DIR"]
    with open(os.path.join(mark_dir, str(payload["value"])), "w") as f:
        f.write("started")
    threading.Event().wait(float(payload["seconds"]))
    return payload.get("value")


def nested_result(payload: dict[str, Any]) -> Any:
    """A result ``payload["depth"]`` lists deep."""
    value: Any = payload.get("leaf", 1)
    for _ in range(int(payload["depth"])):
        value = [value]
    return value


async def sleeps_forever(payload: dict[str, Any]) -> None:
    """Never returns by itself; when cancelled, its ``finally`` leaves a mark named by
    ``payload["value"]`` in ``TEST_MARK_DIR`` (and ``started-<value>`` when it starts)."""
    marks = Path(os.environ["TEST_MARK_DIR"])
    (marks / f"started-{payload['value']}").write_text("started")
    try:
        await asyncio.Event().wait()
    finally:
        (marks / str(payload["value"])).write_text("cancelled")


async def naps(payload: dict[str, Any]) -> Any:
    """Answers ``payload["value"]`` after ``payload["nap"]`` seconds."""
    await asyncio.sleep(float(payload["nap"]))
    return payload["value"]


async def forever_or_fast(payload: dict[str, Any]) -> Any:
    """``{"fast": x}`` answers x at once; anything else is :func:`sleeps_forever`."""
    if "fast" in payload:
        return payload["fast"]
    return await sleeps_forever(payload)


release_stuck = threading.Event()
"""Set by a test to let :func:`stuck_thread` return (in-process servers only)."""
stuck_started = threading.Event()


def stuck_thread(payload: dict[str, Any]) -> Any:
    """A ``def`` handler that blocks: until :data:`release_stuck` is set (in-process tests),
    or in ``time.sleep`` for ``payload["sleep"]`` seconds (a process that must exit)."""
    if "fast" in payload:
        return payload["fast"]
    stuck_started.set()
    if "sleep" in payload:
        time.sleep(float(payload["sleep"]))
    else:
        release_stuck.wait(60)
    return "released"


async def ignores_cancel(payload: dict[str, Any]) -> str:
    """An async handler that swallows its cancellation and runs on for ``payload["more"]`` s;
    it leaves ``started`` in ``TEST_MARK_DIR``."""
    (Path(os.environ["TEST_MARK_DIR"]) / "started").write_text("started")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.sleep(float(payload["more"]))
    return "ignored"


_seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="fresh")


def where(payload: dict[str, Any]) -> dict[str, str]:
    """Which thread serves the request, and what a context variable held before it set it."""
    before = _seen.get()
    _seen.set("set by a request")
    return {"thread": threading.current_thread().name, "before": before}


def progress_from_threads(payload: dict[str, Any]) -> str:
    """Reports progress from ``payload["threads"]`` threads of its own (each in a copy of its
    context), ``payload["each"]`` times each, then returns."""

    def report(n: int) -> None:
        for i in range(int(payload["each"])):
            progress(None, f"{n}.{i}")

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(report, n))
        for n in range(int(payload["threads"]))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return "reported"


async def reports_then_sleeps(payload: dict[str, Any]) -> None:
    """Reports ``payload["reports"]`` progress messages of 64 KiB, then :func:`sleeps_forever`."""
    for i in range(int(payload["reports"])):
        progress(None, f"{i}:" + "x" * 65536)
    await sleeps_forever(payload)
