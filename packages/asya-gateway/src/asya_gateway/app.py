"""Wire the gateway together: settings -> tools, database, broker, MCP, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from prometheus_client import CollectorRegistry
from starlette.routing import Route
from starlette.types import ASGIApp

from .api import AuthAndLimits, build_api
from .broker import Broker, GatewayBroker
from .db import make_engine
from .jobs import JobStore
from .mcp_server import build_mcp_server
from .migrate import upgrade
from .notify import Notifier
from .service import Gateway
from .settings import GatewaySettings
from .tools import Tool, load_tools

__all__ = ["GatewayApp", "create_app"]

log = logging.getLogger("asya_gateway")


@dataclass
class GatewayApp:
    asgi: ASGIApp
    gateway: Gateway
    fastapi: FastAPI


def create_app(
    settings: GatewaySettings,
    tools: dict[str, Tool] | None = None,
    *,
    broker_factory: Callable[[JobStore], GatewayBroker] | None = None,
) -> GatewayApp:
    """Build the ASGI app. Raises ``ToolsFileError`` for a bad tools file (checked at start).

    ``broker_factory`` replaces RabbitMQ (the single-process development run passes one for the
    in-process broker).
    """
    tools = tools if tools is not None else load_tools(settings.tools_path)
    engine = make_engine(settings.database_url)
    notifier = Notifier(settings.database_url)
    store = JobStore(engine, notifier.notify)
    broker: GatewayBroker
    if broker_factory is not None:
        broker = broker_factory(store)
    else:
        broker = Broker(
            settings.rabbitmq_url,
            exchange=settings.exchange,
            events_exchange=settings.events_exchange,
            happy_end=settings.happy_end,
            error_end=settings.error_end,
            events_queue=settings.events_queue,
            store=store,
        )
    gateway = Gateway(
        tools=tools,
        store=store,
        broker=broker,
        notifier=notifier,
        default_timeout=settings.default_timeout,
    )
    registry = CollectorRegistry(auto_describe=True)
    api = build_api(gateway, registry=registry)
    mcp = build_mcp_server(gateway)
    # Host and Origin checks are ours (AuthAndLimits); the SDK's DNS-rebinding guard would
    # refuse the Host of a gateway behind a Service, so it is configured permissively here.
    sessions = StreamableHTTPSessionManager(
        app=mcp,
        json_response=False,
        stateless=False,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=settings.max_body,
    )
    # POST/GET/DELETE /mcp exactly (a Mount would redirect /mcp to /mcp/).
    api.router.routes.append(
        Route("/mcp", endpoint=StreamableHTTPASGIApp(sessions), methods=["GET", "POST", "DELETE"])
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if settings.migrate:
            await upgrade(settings.database_url)
        await notifier.start()
        async with asyncio.TaskGroup() as tg, sessions.run():
            consumer = tg.create_task(broker.consume(), name="consumer")
            sweeper = tg.create_task(_sweep(store), name="timeouts")
            try:
                yield
            finally:
                consumer.cancel()
                sweeper.cancel()
        await broker.close()
        await notifier.stop()
        await engine.dispose()

    api.router.lifespan_context = lifespan
    asgi = AuthAndLimits(
        api,
        tokens=settings.tokens,
        max_body=settings.max_body,
        allowed_origins=settings.allowed_origins,
    )
    return GatewayApp(asgi=asgi, gateway=gateway, fastapi=api)


async def _sweep(store: JobStore) -> None:
    while True:
        for job_id in await store.sweep_timeouts():
            log.info("job %s timed out", job_id)
        await asyncio.sleep(1.0)
