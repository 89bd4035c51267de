"""A tiny HTTP server for probes and Prometheus: GET /healthz, /readyz, /metrics only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["ProbeServer"]

log = logging.getLogger("asya_sidecar.http")

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class ProbeServer:
    def __init__(
        self,
        *,
        live: Callable[[], bool],
        ready: Callable[[], Awaitable[tuple[bool, str]]],
        metrics: Callable[[], bytes],
    ) -> None:
        self._live = live
        self._ready = ready
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("probes and metrics on http://%s:%d", host, bound)
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0].decode("latin-1")
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = 405, b"only GET\n", "text/plain"
            elif path == "/healthz":
                ok = self._live()
                status, ctype = (200 if ok else 503), "text/plain"
                body = b"ok\n" if ok else b"down\n"
            elif path == "/readyz":
                ok, why = await self._ready()
                status, body, ctype = (200 if ok else 503), (why + "\n").encode(), "text/plain"
            elif path == "/metrics":
                status, body, ctype = 200, self._metrics(), "text/plain; version=0.0.4"
            else:
                status, body, ctype = 404, b"not found\n", "text/plain"
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == b"HEAD" else head + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            log.debug("probe connection dropped or sent garbage")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
