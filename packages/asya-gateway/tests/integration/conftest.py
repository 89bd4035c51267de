from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from asya_gateway import GatewaySettings, create_app, parse_tools
from asya_gateway.app import BrokerFactory, GatewayApp
from asya_gateway.db import make_engine
from asya_gateway.jobs import JobStore
from asya_gateway.migrate import upgrade
from asya_gateway.notify import Notifier
from asya_gateway.settings import database_url
from asya_sidecar import SidecarSettings, amqp_sidecar
from asya_testing import AmqpNames
from asya_testing.processes import free_port, runtime_process

HERE = str(Path(__file__).resolve().parents[1])
TOKEN = "test-token-123"  # noqa: S105 - a test credential


def tools_doc(names: AmqpNames) -> dict[str, Any]:
    q = names.queue
    return {
        "tools": [
            {
                "name": "classify_text",
                "description": "Classify a text",
                "steps": [q("preprocess"), q("inference"), q("postprocess")],
                "input_schema": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                },
            },
            {
                "name": "shout_words",
                "description": "Fan out words and shout them",
                "steps": [q("split"), q("shout")],
                "input_schema": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                },
            },
            {"name": "broken", "steps": [q("fails")], "input_schema": {"type": "object"}},
            {
                "name": "sleepy",
                "steps": [q("slow")],
                "timeout": 1,
                "input_schema": {"type": "object", "properties": {"seconds": {"type": "number"}}},
            },
            {
                "name": "patient",
                "steps": [q("slow")],
                "timeout": 60,
                "input_schema": {"type": "object", "properties": {"seconds": {"type": "number"}}},
            },
            {"name": "nowhere", "steps": [q("not-deployed")], "input_schema": {"type": "object"}},
        ]
    }


ACTORS = {
    "preprocess": "preprocess",
    "inference": "inference",
    "postprocess": "postprocess",
    "split": "split",
    "shout": "shout",
    "fails": "fails",
    "slow": "slow",
}


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield database_url(f"sqlite:///{tmp_path / 'gateway.db'}")
        return
    url = request.getfixturevalue("database_url")
    from asya_testing import fresh_database

    async with fresh_database(url) as fresh:
        yield database_url(fresh)


@pytest.fixture
async def store(database: str) -> AsyncIterator[JobStore]:
    """A job store on ``database`` (migrated), closed afterwards."""
    await upgrade(database)
    engine = make_engine(database)
    jobs = JobStore(engine, Notifier(database).notify)
    try:
        yield jobs
    finally:
        await jobs.close()
        await engine.dispose()


@dataclass
class Running:
    url: str
    app: GatewayApp
    settings: GatewaySettings


@contextlib.asynccontextmanager
async def serve(
    settings: GatewaySettings,
    tools: dict[str, Any],
    *,
    broker_factory: BrokerFactory | None = None,
    wait: bool = True,
) -> AsyncIterator[Running]:
    """Serve on a free port; once it answers (and, with ``wait``, consumes), the running app."""
    app = create_app(settings, tools, broker_factory=broker_factory)
    port = free_port()
    config = uvicorn.Config(
        app.asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server.serve())
        try:
            async with asyncio.timeout(30):
                while not server.started:
                    if task.done():
                        raise RuntimeError("gateway did not start")
                    await asyncio.sleep(0.02)
                if wait:
                    await app.gateway.broker.connected.wait()
            yield Running(f"http://127.0.0.1:{port}", app, settings)
        finally:
            server.should_exit = True
    # The SDK's SSE responses (sse-starlette) start one shutdown watcher per event loop that
    # only ends when told the server stops; tell it, let it end, and reset the flag for the
    # next server in this process.
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit = True
    await asyncio.sleep(0.6)
    AppStatus.should_exit = False


@pytest.fixture
def gateway_settings(amqp_url: str, amqp_names: AmqpNames, database: str) -> GatewaySettings:
    return GatewaySettings(
        database_url=database,
        rabbitmq_url=amqp_url,
        exchange=amqp_names.exchange,
        events_exchange=amqp_names.events_exchange,
        happy_end=amqp_names.happy_end,
        error_end=amqp_names.error_end,
        events_queue=amqp_names.queue("gateway-events"),
        tokens=frozenset({TOKEN}),
        max_body=65536,
        default_timeout=60,
    )


@pytest.fixture
def tools(amqp_names: AmqpNames) -> dict[str, Any]:
    return parse_tools(tools_doc(amqp_names), "test-tools.yaml")


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        paths = {}
        for actor, handler in ACTORS.items():
            _, path = stack.enter_context(
                runtime_process(
                    f"pipeline_handlers:{handler}", python_path=[HERE], log_dir=tmp_path
                )
            )
            paths[actor] = path
        yield paths


@pytest.fixture
async def actors(
    amqp_url: str, amqp_names: AmqpNames, runtimes: dict[str, str]
) -> AsyncIterator[None]:
    """Every test actor: a real runtime process and an in-process sidecar on real RabbitMQ."""
    stop = asyncio.Event()
    sidecars = []
    for actor, path in runtimes.items():
        s = SidecarSettings(
            actor=amqp_names.queue(actor),
            rabbitmq_url=amqp_url,
            exchange=amqp_names.exchange,
            socket_path=path,
            happy_end=amqp_names.happy_end,
            error_end=amqp_names.error_end,
            events_exchange=amqp_names.events_exchange,
            http_port=None,
            runtime_wait=20,
            shutdown_grace=2,
        )
        sidecars.append(amqp_sidecar(s))
    async with asyncio.TaskGroup() as tg:
        for sidecar in sidecars:
            tg.create_task(sidecar.run(stop))
        try:
            async with asyncio.timeout(30):
                for sidecar in sidecars:
                    await sidecar.consuming.wait()
            yield
        finally:
            stop.set()


@pytest.fixture
async def gateway(
    gateway_settings: GatewaySettings, tools: dict[str, Any]
) -> AsyncIterator[Running]:
    async with serve(gateway_settings, tools) as running:
        yield running


@pytest.fixture
def serve_gateway() -> Any:
    return serve


@pytest.fixture
def settings_with() -> Any:
    return replace
