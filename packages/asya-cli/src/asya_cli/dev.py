"""``asya dev``: a whole pipeline on one machine.

Each actor's runtime runs as its own process (the same code as in a pod); the sidecars run on the
in-process broker (or RabbitMQ with ``--rabbitmq-url``); the gateway serves REST, SSE and MCP on
127.0.0.1 with SQLite (or PostgreSQL with ``--database-url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from asya_gateway import AuthMode, GatewaySettings, create_app
from asya_gateway import MemoryBroker as GatewayMemoryBroker
from asya_gateway import database_url as normalise_database_url
from asya_protocol import BlockingRuntimeClient, ControlRequest, encode_control
from asya_sidecar import (
    MemoryBroker,
    Sidecar,
    SidecarSettings,
    Unroutable,
    amqp_sidecar,
    memory_sidecar,
)

from .pipeline import Pipeline

__all__ = ["DevError", "run_dev"]


class DevError(Exception):
    """Something a new user will hit, with a one-line hint."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


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


def _ping(path: str) -> bool:
    try:
        with BlockingRuntimeClient(path, timeout=2) as client:
            client.send(encode_control(ControlRequest(op="ping")))
            client.reply()
    except OSError:
        return False
    return True


def start_runtimes(
    pipeline: Pipeline, workdir: Path, say: Callable[[str], None]
) -> dict[str, tuple[subprocess.Popen[bytes], str]]:
    runtimes: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    # The one read of the environment: each runtime is a child process that inherits ours
    # (PATH, PYTHONPATH, a virtualenv), plus its own ASYA_* settings.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pipeline.folder), env.get("PYTHONPATH")]))
    for actor, handler in pipeline.actors.items():
        socket_path = str(workdir / f"{actor}.sock")
        log = open(workdir / f"{actor}.log", "wb")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "asya_runtime"],
            env={
                **env,
                "ASYA_HANDLER": handler,
                "ASYA_SOCKET_PATH": socket_path,
                "ASYA_LOG_LEVEL": "WARNING",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        runtimes[actor] = (proc, socket_path)
    deadline = time.monotonic() + 60
    for actor, (proc, path) in runtimes.items():
        while not _ping(path):
            if proc.poll() is not None:
                reason = (workdir / f"{actor}.log").read_text(errors="replace").strip().splitlines()
                raise DevError(
                    f"the runtime of {actor!r} stopped: {reason[-1] if reason else 'no output'}",
                    f"check {pipeline.actors[actor]!r}: the module must be importable from "
                    f"{pipeline.folder} and the function must exist",
                )
            if time.monotonic() > deadline:
                raise DevError(
                    f"the runtime of {actor!r} did not start in 60s",
                    "see its log in " + str(workdir),
                )
            time.sleep(0.05)
        say(f"runtime  {actor:<14} {pipeline.actors[actor]}")
    return runtimes


async def run_dev(pipeline: Pipeline, options: Options, say: Callable[[str], None]) -> None:
    if not _port_free(options.port):
        raise DevError(f"port {options.port} on 127.0.0.1 is taken", "pass another one with --port")
    workdir = Path(tempfile.mkdtemp(prefix="asya-dev-"))
    runtimes = await asyncio.to_thread(start_runtimes, pipeline, workdir, say)
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
    for actor, (_, path) in runtimes.items():
        sc = SidecarSettings(
            actor=actor,
            socket_path=path,
            http_port=None,
            runtime_wait=30,
            rabbitmq_url=options.rabbitmq_url or SidecarSettings.rabbitmq_url,
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            for sidecar in sidecars:
                tg.create_task(sidecar.run(stop))
            serving = tg.create_task(server.serve())
            async with asyncio.timeout(60):
                for sidecar in sidecars:
                    await sidecar.consuming.wait()
                while not server.started:
                    if serving.done():
                        raise DevError("the gateway did not start", "see the messages above")
                    await asyncio.sleep(0.05)
            transport = (
                f"RabbitMQ at {options.rabbitmq_url}"
                if options.rabbitmq_url
                else "the in-process broker"
            )
            say(f"sidecars on {transport}; jobs in {db}")
            names = ", ".join(pipeline.tools)
            say(f"gateway  http://127.0.0.1:{options.port}  (MCP: /mcp; tools: {names})")
            say(
                f"try:     asya call {next(iter(pipeline.tools))} '{{...}}' --url http://127.0.0.1:{options.port}"
            )
            say("ready; Ctrl-C stops")
            await stop.wait()
            server.should_exit = True
    finally:
        stop.set()
        broker.close()
        for proc, _ in runtimes.values():
            proc.terminate()
        for proc, _ in runtimes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
