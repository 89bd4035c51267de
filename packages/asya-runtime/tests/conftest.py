from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from asya_runtime import RuntimeServer, RuntimeSettings, load_handler
from asya_testing.processes import ManagedProcess, runtime_process, short_socket_path

HERE = str(Path(__file__).parent)

T = TypeVar("T")
StartRuntime = Callable[..., AbstractContextManager[tuple[ManagedProcess, str]]]
Serve = Callable[..., Awaitable[Any]]


def handler_spec(handler: str) -> str:
    return handler if ":" in handler else f"sample_handlers:{handler}"


@pytest.fixture
def start_runtime(tmp_path: Path) -> StartRuntime:
    """Start ``python -m asya_runtime`` with a handler from sample_handlers (or any module):
    for what only a process shows (the entry point, signals, exit codes)."""

    def start(handler: str, **kwargs: Any) -> AbstractContextManager[tuple[ManagedProcess, str]]:
        return runtime_process(
            handler_spec(handler), python_path=[HERE], log_dir=tmp_path, **kwargs
        )

    return start


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Serve:
    """Serve a handler with an in-process :class:`RuntimeServer` on a temporary Unix socket, in
    the test's event loop, while ``check(path)`` runs in a worker thread (it may block: the
    blocking protocol client, several threads at once); return what ``check`` returns.

    ``env`` holds runtime settings as the environment would (``ASYA_MAX_FRAME_SIZE``...).
    """
    monkeypatch.syspath_prepend(HERE)

    async def run(
        handler: str,
        check: Callable[[str], T],
        *,
        env: Mapping[str, str] | None = None,
        socket_path: str | None = None,
    ) -> T:
        spec = handler_spec(handler)
        path = socket_path or short_socket_path()
        settings = RuntimeSettings.from_env(
            {"ASYA_HANDLER": spec, "ASYA_SOCKET_PATH": path, **(env or {})}
        )
        server = RuntimeServer(settings, load_handler(spec))
        stop, ready = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(server.serve(stop, ready), name="runtime-server")
        try:
            await _until_ready(serving, ready)
            return await asyncio.to_thread(check, path)
        finally:
            stop.set()
            await serving

    return run


async def _until_ready(serving: asyncio.Task[bool], ready: asyncio.Event) -> None:
    waiter = asyncio.create_task(ready.wait(), name="runtime-ready")
    try:
        await asyncio.wait({serving, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    if serving.done():
        serving.result()  # raises what stopped it
        raise AssertionError("the runtime server stopped before it was ready")
    if not ready.is_set():
        raise TimeoutError("the runtime server was not ready within 10 s")
