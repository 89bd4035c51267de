"""A pipeline as separate processes, as in production: a runtime and a sidecar per step and one
or more gateways, on real RabbitMQ and PostgreSQL, each process killable and restartable.

    async with process_pipeline(amqp_url, names, database, tmp_path, EXAMPLE, steps, tools) as p:
        job = await p.post_job("classify_text", {"text": "Hello"})
        p.sidecars["inference"].kill(); p.start_sidecar("inference")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .amqp import AmqpNames
from .environment import inherited
from .processes import ManagedProcess, free_port, managed_process, runtime_process, sidecar_process

__all__ = ["TOKEN", "ProcessPipeline", "process_pipeline"]

TOKEN = "e2e-token"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class ProcessPipeline:
    url: str
    names: AmqpNames
    log_dir: Path
    handlers: str
    """The folder holding ``handlers.py`` (put on the runtimes' PYTHONPATH)."""
    common: dict[str, str]
    gateway_env: dict[str, str] = field(default_factory=dict)
    sidecar_env: dict[str, dict[str, str]] = field(default_factory=dict)
    runtimes: dict[str, tuple[ManagedProcess, str]] = field(default_factory=dict)
    sidecars: dict[str, ManagedProcess] = field(default_factory=dict)
    gateways: dict[int, ManagedProcess] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    def start_runtime(self, step: str, socket_path: str | None = None) -> None:
        self.runtimes[step] = self.stack.enter_context(
            runtime_process(
                f"handlers:{step}",
                python_path=[self.handlers],
                log_dir=self.log_dir,
                socket_path=socket_path,
            )
        )

    def start_sidecar(self, step: str, **env: str) -> None:
        if step not in self.sidecar_env:
            self.sidecar_env[step] = {
                **self.common,
                "ASYA_SOCKET_PATH": self.runtimes[step][1],
                "ASYA_CONCURRENCY": "4",
                "ASYA_RUNTIME_WAIT": "60",
            }
        self.sidecars[step] = self.stack.enter_context(
            sidecar_process(
                self.names.queue(step), env={**self.sidecar_env[step], **env}, log_dir=self.log_dir
            )
        )

    def restart_runtime(self, step: str, pause: float = 0.5) -> None:
        """SIGKILL the step's runtime and, ``pause`` seconds later (the sidecar notices), start a
        new one on the same socket path."""
        proc, path = self.runtimes[step]
        proc.kill()
        time.sleep(pause)
        self.start_runtime(step, socket_path=path)

    def restart_sidecar(self, step: str) -> None:
        """SIGKILL the step's sidecar and start a new one."""
        self.sidecars[step].kill()
        self.start_sidecar(step)

    async def start_gateway(self, port: int | None = None, **env: str) -> str:
        """Start a gateway process (on ``port`` or a free one); return its URL once it answers."""
        import httpx  # noqa: PLC0415 - only the tests that run a gateway need it

        port = port or free_port()
        gateway = self.stack.enter_context(
            managed_process(
                [sys.executable, "-m", "asya_gateway"],
                {**self.gateway_env, **env, "ASYA_GATEWAY_PORT": str(port)},
                log_dir=self.log_dir,
                name=f"gateway-{port}",
            )
        )
        self.gateways[port] = gateway
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(60):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return url
                if not gateway.alive():
                    raise RuntimeError(f"the gateway exited at start:\n{gateway.log()}")
                await asyncio.sleep(0.1)


def tools_file(path: Path, tools: Sequence[Mapping[str, Any]], names: AmqpNames) -> Path:
    """Write a tools file whose steps are the test's own queue names."""
    body = [{**tool, "steps": [names.queue(s) for s in tool["steps"]]} for tool in tools]
    path.write_text(json.dumps({"tools": body}))
    return path


@contextlib.asynccontextmanager
async def process_pipeline(
    amqp_url: str,
    names: AmqpNames,
    database_url: str,
    log_dir: Path,
    *,
    handlers: str,
    steps: Sequence[str],
    tools: Sequence[Mapping[str, Any]],
    gateway_env: Mapping[str, str] | None = None,
) -> AsyncIterator[ProcessPipeline]:
    """Start every step's runtime and sidecar and one gateway; stop them all at the end."""
    common = {
        "ASYA_RABBITMQ_URL": amqp_url,
        "ASYA_RABBITMQ_EXCHANGE": names.exchange,
        "ASYA_HAPPY_END_QUEUE": names.happy_end,
        "ASYA_ERROR_END_QUEUE": names.error_end,
        "ASYA_EVENTS_EXCHANGE": names.events_exchange,
        "ASYA_CONTROL_EXCHANGE": names.control_exchange,
    }
    port = free_port()
    pipeline = ProcessPipeline(
        url=f"http://127.0.0.1:{port}",
        names=names,
        log_dir=log_dir,
        handlers=handlers,
        common=common,
    )
    with pipeline.stack:
        for step in steps:
            pipeline.start_runtime(step)
            pipeline.start_sidecar(step)
        pipeline.gateway_env = inherited(
            **{
                **common,
                "ASYA_DATABASE_URL": database_url,
                "ASYA_GATEWAY_EVENTS_QUEUE": names.queue("gateway-events"),
                "ASYA_GATEWAY_TOOLS": str(tools_file(log_dir / "tools.yaml", tools, names)),
                "ASYA_GATEWAY_TOKENS": TOKEN,
                **(gateway_env or {}),
            }
        )
        await pipeline.start_gateway(port)
        yield pipeline
