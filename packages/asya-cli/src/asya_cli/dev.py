"""``asya dev``: a whole pipeline on one machine.

Each actor's runtime runs as its own process (the same code as in a pod); the sidecars run on the
in-process broker (or RabbitMQ with ``--rabbitmq-url``); the gateway serves REST, SSE and MCP on
127.0.0.1 with SQLite (or PostgreSQL with ``--database-url``).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from asya_gateway import AuthMode, GatewaySettings, create_app
from asya_gateway import MemoryBroker as GatewayMemoryBroker
from asya_gateway import database_url as normalise_database_url
from asya_sidecar import (
    MemoryBroker,
    Sidecar,
    SidecarSettings,
    Unroutable,
    amqp_sidecar,
    memory_sidecar,
)

from .errors import DevError
from .pipeline import BatchCaps, Pipeline
from .runtimes import Runtime, spawn_runtimes, stop_runtimes, wait_ready

__all__ = ["DevError", "Options", "run_dev"]


@dataclass
class Options:
    port: int = 8000
    rabbitmq_url: str | None = None
    database_url: str | None = None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def run_dev(pipeline: Pipeline, options: Options, say: Callable[[str], None]) -> None:
    """Run the pipeline until SIGINT or SIGTERM; the runtimes are stopped whatever happens."""
    if not _port_free(options.port):
        raise DevError(f"port {options.port} on 127.0.0.1 is taken", "pass another one with --port")
    workdir = Path(tempfile.mkdtemp(prefix="asya-dev-"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runtimes = spawn_runtimes(pipeline, workdir)
    try:
        if not await wait_ready(runtimes, pipeline.folder, stop):
            return
        for runtime in runtimes:
            say(f"runtime  {runtime.actor:<14} {runtime.handler}{_caps(pipeline, runtime.actor)}")
        await _serve(pipeline, options, runtimes, workdir, stop, say)
    finally:
        stop.set()
        await asyncio.to_thread(stop_runtimes, runtimes)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _caps(pipeline: Pipeline, actor: str) -> str:
    caps = pipeline.batch.get(actor)
    if caps is None:
        return ""
    size = "the handler's" if caps.max_size is None else str(caps.max_size)
    wait = "the handler's" if caps.max_wait is None else f"{caps.max_wait:g} s"
    return f"  (batches: at most {size}, waiting at most {wait})"


async def _serve(
    pipeline: Pipeline,
    options: Options,
    runtimes: list[Runtime],
    workdir: Path,
    stop: asyncio.Event,
    say: Callable[[str], None],
) -> None:
    broker = MemoryBroker()
    db = options.database_url or f"sqlite:///{workdir / 'jobs.db'}"
    settings = GatewaySettings(
        database_url=normalise_database_url(db),
        rabbitmq_url=options.rabbitmq_url or GatewaySettings.rabbitmq_url,
        port=options.port,
        tokens=frozenset(),  # 127.0.0.1 only, one user: no tokens
        auth=AuthMode.DISABLED,
    )
    sidecars: list[Sidecar] = []
    for runtime in runtimes:
        caps = pipeline.batch.get(runtime.actor, BatchCaps())
        sc = SidecarSettings(
            actor=runtime.actor,
            socket_path=runtime.socket_path,
            http_port=None,
            runtime_wait=30,
            rabbitmq_url=options.rabbitmq_url or SidecarSettings.rabbitmq_url,
            batch_max_size=caps.max_size,
            batch_max_wait=caps.max_wait,
        )
        sidecars.append(amqp_sidecar(sc) if options.rabbitmq_url else memory_sidecar(broker, sc))
    factory = (
        None
        if options.rabbitmq_url
        else GatewayMemoryBroker.factory(
            broker,
            happy_end=settings.happy_end,
            error_end=settings.error_end,
            unroutable=(Unroutable,),
        )
    )
    app = create_app(settings, pipeline.tools, broker_factory=factory)
    server = uvicorn.Server(
        uvicorn.Config(
            app.asgi,
            host="127.0.0.1",
            port=options.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
    )
    started = False
    try:
        async with asyncio.TaskGroup() as tg:
            for sidecar in sidecars:
                tg.create_task(sidecar.run(stop))
            serving = tg.create_task(server.serve())
            started = await _started(server, serving, sidecars)
            if started:
                _announce(pipeline, options, db, say)
                await stop.wait()
            stop.set()
            server.should_exit = True
    finally:
        stop.set()
        broker.close()
    if not started:
        raise DevError("the gateway did not start", "see the messages above")


async def _started(
    server: uvicorn.Server, serving: asyncio.Task[None], sidecars: list[Sidecar]
) -> bool:
    async with asyncio.timeout(60):
        for sidecar in sidecars:
            await sidecar.consuming.wait()
        while not server.started:
            if serving.done():
                return False
            await asyncio.sleep(0.05)
    return True


def _announce(pipeline: Pipeline, options: Options, db: str, say: Callable[[str], None]) -> None:
    transport = (
        f"RabbitMQ at {options.rabbitmq_url}" if options.rabbitmq_url else "the in-process broker"
    )
    say(f"sidecars on {transport}; jobs in {db}")
    names = ", ".join(pipeline.tools)
    url = f"http://127.0.0.1:{options.port}"
    say(f"gateway  {url}  (MCP: /mcp; tools: {names})")
    say(f"try:     asya call {next(iter(pipeline.tools))} '{{...}}' --url {url}")
    say("ready; Ctrl-C stops")
