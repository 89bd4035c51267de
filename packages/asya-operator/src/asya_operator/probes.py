"""The probe server: GET /healthz (liveness) and /readyz (readiness), JSON, and /metrics
(Prometheus text, :mod:`.metrics`), over plain asyncio.

``/readyz`` answers 200 while every check of the :class:`~.health.Health` passes and 503 naming
each check's state otherwise: ``{"ready": false, "checks": {"asyas": "Forbidden: ..."}}``.
``/healthz`` answers 503 once a check has failed for longer than ``unhealthy_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from http import HTTPStatus

from .health import Health
from .metrics import CONTENT_TYPE, OperatorMetrics

__all__ = ["ProbeServer"]

log = logging.getLogger("asya_operator")

_HEAD_LIMIT = 8192
_READ_TIMEOUT = 5.0
_DROPPED = (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError)


def answer(health: Health, method: str, path: str) -> tuple[HTTPStatus, dict[str, object]]:
    """The status and JSON body for one request (pure: the server only writes it out)."""
    if method not in ("GET", "HEAD"):
        return HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only GET"}
    match path:
        case "/readyz":
            ready, checks = health.readiness()
            return _status(ready), {"ready": ready, "checks": checks}
        case "/healthz":
            live, failing = health.liveness()
            return _status(live), {"live": live, "failing": failing}
        case _:
            return HTTPStatus.NOT_FOUND, {"error": f"no {path}; try /healthz, /readyz or /metrics"}


def _status(ok: bool) -> HTTPStatus:
    return HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE


class ProbeServer:
    def __init__(self, health: Health, metrics: OperatorMetrics | None = None) -> None:
        self.health = health
        self.metrics = metrics or OperatorMetrics()
        self.port: int | None = None
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); returns the port bound."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=_HEAD_LIMIT)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("probes on http://%s:%d/healthz and /readyz", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await self._response(reader))
            await writer.drain()
        except _DROPPED:
            log.debug("a probe connection was dropped, too slow or too large")
        finally:
            writer.close()
            await _closed(writer)

    async def _response(self, reader: asyncio.StreamReader) -> bytes:
        async with asyncio.timeout(_READ_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        method, target, *_ = [*head.decode("latin-1").split(" ", 2), "", ""]
        path = target.partition("?")[0]
        if path == "/metrics" and method in ("GET", "HEAD"):
            status, payload, content_type = HTTPStatus.OK, self.metrics.render(), CONTENT_TYPE
        else:
            status, body = answer(self.health, method, path)
            payload, content_type = json.dumps(body).encode() + b"\n", "application/json"
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(payload)}",
            "Connection: close",
        ]
        return "\r\n".join(lines).encode() + b"\r\n\r\n" + (b"" if method == "HEAD" else payload)


async def _closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await writer.wait_closed()
