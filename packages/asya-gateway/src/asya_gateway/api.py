"""The HTTP surface: REST for jobs, Server-Sent Events, MCP at /mcp; bearer auth; limits."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .db import JobEvent
from .service import Gateway, InvalidArguments, StartFailed, UnknownTool

__all__ = ["AuthAndLimits", "build_api"]

log = logging.getLogger("asya_gateway.http")
OPEN_PATHS = frozenset({"/healthz"})


class AuthAndLimits:
    """ASGI middleware: bearer tokens on everything but /healthz, Origin checks for /mcp, and a
    request body limit (413), for the REST routes and the mounted MCP app alike."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: frozenset[str],
        max_body: int,
        allowed_origins: frozenset[str],
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body = max_body
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        if path not in OPEN_PATHS and self.tokens:
            auth = headers.get("authorization", "")
            token = auth[7:] if auth[:7].lower() == "bearer " else ""
            if not any(hmac.compare_digest(token.encode(), t.encode()) for t in self.tokens):
                await _plain(
                    send,
                    401,
                    {"detail": "missing or invalid bearer token"},
                    [(b"www-authenticate", b'Bearer realm="asya"')],
                )
                return
        origin = headers.get("origin")
        if (
            path.startswith("/mcp")
            and origin
            and not self._origin_ok(origin, headers.get("host", ""))
        ):
            await _plain(send, 403, {"detail": f"origin {origin!r} is not allowed"})
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _plain(send, 413, {"detail": f"request body over {self.max_body} bytes"})
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _plain(send, 413, {"detail": f"request body over {self.max_body} bytes"})

    def _origin_ok(self, origin: str, host: str) -> bool:
        if origin in self.allowed_origins:
            return True
        # Same origin as the Host the client reached (a browser page served by us).
        return origin.split("://", 1)[-1] == host


class _TooLarge(Exception):
    pass


async def _plain(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class JobRequest(BaseModel):
    tool: str = Field(min_length=1, max_length=128)
    arguments: dict[str, Any] = Field(default_factory=dict)


def _sse(event: JobEvent) -> bytes:
    data = json.dumps({"type": event.type, **event.data, "time": event.created_at.isoformat()})
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


def build_api(gateway: Gateway, *, registry: CollectorRegistry) -> FastAPI:
    app = FastAPI(title="Asya gateway", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    started = Counter(
        "asya_gateway_jobs_started",
        "Jobs started, by tool and interface",
        ["tool", "via"],
        registry=registry,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.post("/jobs", status_code=201)
    async def create_job(body: JobRequest) -> JSONResponse:
        try:
            job = await gateway.start(body.tool, body.arguments)
        except UnknownTool:
            raise HTTPException(404, f"unknown tool {body.tool!r}") from None
        except InvalidArguments as exc:
            raise HTTPException(
                422, {"message": "invalid arguments", "errors": exc.errors}
            ) from None
        except StartFailed as exc:
            return JSONResponse(exc.job.to_dict(), status_code=503)
        started.labels(tool=body.tool, via="rest").inc()
        return JSONResponse(job.to_dict(), status_code=201)

    @app.get("/jobs")
    async def list_jobs(
        status: str | None = None,
        tool: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        before: str | None = None,
    ) -> dict[str, Any]:
        jobs = await gateway.store.list_jobs(status=status, tool=tool, limit=limit, before=before)
        items = [j.to_dict() for j in jobs]
        return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        job = await gateway.store.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job")
        return job.to_dict()

    @app.post("/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> dict[str, Any]:
        job = await gateway.store.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job")
        if not await gateway.store.cancel(job_id):
            raise HTTPException(409, f"job already {job.status}")
        cancelled = await gateway.store.get(job_id)
        return cancelled.to_dict() if cancelled else {}

    @app.get("/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        if await gateway.store.get(job_id) is None:
            raise HTTPException(404, "no such job")
        raw = request.headers.get("last-event-id", "0")
        after = int(raw) if raw.isdigit() else 0

        async def stream() -> AsyncIterator[bytes]:
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def on_event(event: JobEvent) -> None:
                await queue.put(_sse(event))

            async def follow() -> None:
                try:
                    await gateway.follow(job_id, after=after, on_event=on_event)
                finally:
                    await queue.put(None)

            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(follow())
                try:
                    while True:
                        try:
                            async with asyncio.timeout(15):
                                chunk = await queue.get()
                        except TimeoutError:
                            yield b": keep-alive\n\n"
                            continue
                        if chunk is None:
                            break
                        yield chunk
                finally:
                    task.cancel()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app
