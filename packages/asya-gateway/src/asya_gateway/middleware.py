"""Bearer tokens, Origin checks and the request body limit: one ASGI middleware in front of the
REST routes and the mounted MCP app alike."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["OPEN_PATHS", "AuthAndLimits"]

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
