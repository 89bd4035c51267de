from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from asya_sidecar import Sidecar, SidecarSettings, amqp_sidecar
from asya_testing import AmqpNames
from asya_testing.processes import ManagedProcess, runtime_process

HERE = str(Path(__file__).resolve().parents[1])


@dataclass
class Actor:
    name: str
    handler: str
    runtime: ManagedProcess
    socket_path: str
    sidecar: Sidecar | None = None
    env: dict[str, str] = field(default_factory=dict)


def settings_for(
    url: str, names: AmqpNames, actor: str, socket_path: str, **kw: Any
) -> SidecarSettings:
    base = SidecarSettings(
        actor=actor,
        rabbitmq_url=url,
        exchange=names.exchange,
        socket_path=socket_path,
        happy_end=names.happy_end,
        error_end=names.error_end,
        events_exchange=names.events_exchange,
        http_host="127.0.0.1",
        http_port=None,
        runtime_wait=20.0,
        shutdown_grace=5.0,
    )
    return replace(base, **kw)


@pytest.fixture
def run_sidecars() -> Any:
    return running_sidecars


@pytest.fixture
def make_sidecars(amqp_url: str, amqp_names: AmqpNames, runtimes: Any) -> Any:
    """Build in-process sidecars for (queue base name, handler) pairs, each with its runtime."""

    def make(specs: list[tuple[str, str]], **kw: Any) -> list[Sidecar]:
        runtime_env = kw.pop("runtime_env", None) or {}
        sidecars = []
        for base, handler in specs:
            _, path = runtimes(handler, env=runtime_env)
            settings = settings_for(amqp_url, amqp_names, amqp_names.queue(base), path, **kw)
            sidecars.append(amqp_sidecar(settings))
        return sidecars

    return make


@pytest.fixture
def sidecar_settings(amqp_url: str, amqp_names: AmqpNames) -> Any:
    def make(actor: str, socket_path: str, **kw: Any) -> SidecarSettings:
        return settings_for(amqp_url, amqp_names, actor, socket_path, **kw)

    return make


@asynccontextmanager
async def running_sidecars(sidecars: list[Sidecar]) -> AsyncIterator[None]:
    """Run in-process sidecars until the block ends; fail loudly if one dies early."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        for sidecar in sidecars:
            tg.create_task(sidecar.run(stop), name=f"sidecar-{sidecar.settings.actor}")
        try:
            async with asyncio.timeout(30):
                for sidecar in sidecars:
                    await sidecar.consuming.wait()
            yield
        finally:
            stop.set()


@pytest.fixture
def supervisor() -> Any:
    return Supervisor


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[Any]:
    """Start asya-runtime processes serving handlers from pipeline_handlers.py."""
    with ExitStack() as stack:

        def start(handler: str, **kwargs: Any) -> tuple[ManagedProcess, str]:
            spec = handler if ":" in handler else f"pipeline_handlers:{handler}"
            return stack.enter_context(
                runtime_process(spec, python_path=[HERE], log_dir=tmp_path, **kwargs)
            )

        yield start


class Supervisor:
    """Restarts a runtime when it exits, as the kubelet restarts a crashed container."""

    def __init__(self, start: Any, handler: str, socket_path: str, env: dict[str, str]) -> None:
        self._start = start
        self.handler = handler
        self.socket_path = socket_path
        self.env = env
        self.restarts = 0
        self._stop = threading.Event()
        self.current: ManagedProcess | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Supervisor:
        self.current = self._launch(wait_ready=True)
        self._thread.start()
        return self

    def _launch(self, *, wait_ready: bool) -> ManagedProcess:
        proc, _ = self._start(
            self.handler, socket_path=self.socket_path, env=self.env, wait_ready=wait_ready
        )
        return proc

    def _loop(self) -> None:
        # A restarted runtime is not waited on: the sidecar may hand it a message (the poison
        # again) that kills it before a readiness ping would answer; this loop sees that exit.
        while not self._stop.wait(0.05):
            if self.current is not None and not self.current.alive() and self.restarts < 50:
                self.restarts += 1
                self.current = self._launch(wait_ready=False)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
