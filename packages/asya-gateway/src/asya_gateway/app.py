"""Wire the gateway together: settings -> tools, database, broker, MCP, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route
from starlette.types import ASGIApp

from .api import build_api
from .broker import Broker, GatewayBroker
from .db import make_engine
from .jobs import JobStore
from .mcp_server import build_mcp_server
from .metrics import GatewayMetrics, RequestMetrics
from .middleware import AuthAndLimits, JsonRpcGuard
from .migrate import upgrade
from .notify import Notifier
from .retention import PURGE_EVERY
from .service import Gateway
from .settings import GatewaySettings
from .supervise import Health, Supervisor
from .tools import Tool, load_tools

__all__ = ["BrokerFactory", "GatewayApp", "create_app"]

log = logging.getLogger("asya_gateway")
BrokerFactory = Callable[[JobStore], GatewayBroker]
COUNT_EVERY = 5.0
"""Seconds between two counts of the unfinished jobs (``asya_gateway_jobs_unfinished``)."""
CONSUMER, SWEEPER, LISTENER = "consumer", "timeouts", "notifications"  # names in /readyz
SWEEP_INTERVAL = 1.0


@dataclass
class GatewayApp:
    asgi: ASGIApp
    gateway: Gateway
    fastapi: FastAPI


@dataclass(frozen=True)
class _Parts:
    """What the app's lifespan starts and stops, in order."""

    settings: GatewaySettings
    engine: AsyncEngine
    notifier: Notifier
    gateway: Gateway
    broker: GatewayBroker
    sessions: StreamableHTTPSessionManager
    supervisor: Supervisor


def _rabbitmq(settings: GatewaySettings) -> BrokerFactory:
    return functools.partial(Broker, settings)


def create_app(
    settings: GatewaySettings,
    tools: dict[str, Tool] | None = None,
    *,
    broker_factory: BrokerFactory | None = None,
) -> GatewayApp:
    """Build the ASGI app. Raises ``ToolsFileError`` for a bad tools file (checked at start).

    ``broker_factory`` replaces RabbitMQ (the single-process development run passes one for the
    in-process broker, :class:`asya_gateway.memory.MemoryBroker`).
    """
    tools = tools if tools is not None else load_tools(settings.tools_path)
    engine = make_engine(settings.database_url)
    notifier = Notifier(settings.database_url)
    metrics = GatewayMetrics()
    store = JobStore(engine, notifier.notify, on_finished=metrics.job_finished)
    broker = (broker_factory or _rabbitmq(settings))(store)
    gateway = Gateway(
        tools=tools,
        store=store,
        broker=broker,
        notifier=notifier,
        default_timeout=settings.default_timeout,
        retention=settings.job_retention,
        metrics=metrics,
    )
    supervisor = _supervisor(settings, gateway, notifier)
    api = build_api(gateway, metrics, supervisor)
    # Host and Origin checks are ours (AuthAndLimits, for REST and MCP alike, with the hosts
    # of ASYA_GATEWAY_ALLOWED_HOSTS); the SDK's own guard only knows loopback hosts, so it is
    # off. Sessions are capped and closed when idle (the SDK answers 503 over the cap).
    sessions = StreamableHTTPSessionManager(
        app=build_mcp_server(gateway),
        json_response=False,
        stateless=False,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=settings.max_body,
        max_sessions=settings.max_sessions,
        session_idle_timeout=settings.session_idle_timeout,
    )
    # POST/GET/DELETE /mcp exactly (a Mount would redirect /mcp to /mcp/); JsonRpcGuard answers
    # what is not one valid JSON-RPC message before the SDK sees it.
    mcp = JsonRpcGuard(StreamableHTTPASGIApp(sessions))
    api.router.routes.append(Route("/mcp", endpoint=mcp, methods=["GET", "POST", "DELETE"]))
    api.state.parts = _Parts(settings, engine, notifier, gateway, broker, sessions, supervisor)
    api.router.lifespan_context = _lifespan
    asgi = AuthAndLimits(
        RequestMetrics(api, metrics),
        principals=settings.token_principals(),
        max_body=settings.max_body,
        body_timeout=settings.body_timeout,
        allowed_origins=settings.allowed_origins,
        allowed_hosts=settings.served_hosts(),
    )
    return GatewayApp(asgi=asgi, gateway=gateway, fastapi=api)


def _supervisor(settings: GatewaySettings, gateway: Gateway, notifier: Notifier) -> Supervisor:
    """The long-lived background tasks, each restarted on failure (:mod:`.supervise`)."""
    supervisor = Supervisor(unhealthy_after=settings.unhealthy_after)
    supervisor.add(CONSUMER, gateway.broker.consume)
    supervisor.add(SWEEPER, functools.partial(_sweep, gateway))
    if notifier.postgres:
        supervisor.add(LISTENER, notifier.listen)
    return supervisor


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    parts: _Parts = app.state.parts
    if parts.settings.migrate:
        await upgrade(parts.settings.database_url)
    # No task group shared with the background tasks: a failing one is restarted by the
    # supervisor and never cancels the MCP sessions or its siblings.
    try:
        async with parts.sessions.run(), parts.supervisor.running():
            yield
    finally:
        await parts.broker.close()
        await parts.gateway.store.close()
        await parts.engine.dispose()


async def _sweep(gateway: Gateway, health: Health) -> None:
    """Time out overdue jobs every second, count the unfinished ones every
    :data:`COUNT_EVERY` seconds (a gauge), and purge the jobs past the retention every
    :data:`~.retention.PURGE_EVERY` seconds; a database error ends it (the supervisor restarts
    it after the backoff)."""
    purged_at = counted_at = -PURGE_EVERY
    while True:
        for job_id in await gateway.time_out_overdue():
            log.info("job %s timed out", job_id)
        if time.monotonic() - purged_at >= PURGE_EVERY:
            await gateway.purge_expired()
            purged_at = time.monotonic()
        if time.monotonic() - counted_at >= COUNT_EVERY:
            await gateway.count_unfinished()  # the metrics' gauge
            counted_at = time.monotonic()
        health.ok()
        await asyncio.sleep(SWEEP_INTERVAL)
