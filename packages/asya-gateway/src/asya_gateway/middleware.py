"""Host and Origin checks, bearer tokens and the limits on request bodies: one ASGI middleware
in front of the REST routes and the mounted MCP app alike; and :class:`JsonRpcGuard`, in front
of the SDK's transport, which answers every JSON-RPC message the SDK would not (see there).

The ``Host`` header must name an allowed host (421 otherwise, on every path but /healthz,
/readyz and /metrics, which kubelets and Prometheus fetch by the pod's address): with a page
of another site able to reach a local gateway through a name that resolves to 127.0.0.1 (DNS
rebinding), the Host is what tells the two apart.

The body is read here, whole, before any route sees it, under three limits:

- size, ``max_body`` bytes (413);
- time, ``body_timeout`` seconds for the whole body from the first read (408): a client
  trickling bytes cannot hold a connection and a worker for ever;
- nesting, :data:`asya_protocol.MAX_JSON_DEPTH` for a tool's arguments (they become the first
  payload), checked without recursion (:func:`asya_protocol.check_json`) before any JSON
  parser recurses over it: REST answers 422, MCP the JSON-RPC error -32602, naming the limit.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asya_protocol import MAX_JSON_DEPTH, EnvelopeError, NestingTooDeepError, check_json

from .principals import ANONYMOUS, SCOPE_KEY, Principal, authenticate

__all__ = [
    "ANY_HOST_PATHS",
    "OPEN_PATHS",
    "SESSIONS_RETRY_AFTER",
    "AuthAndLimits",
    "JsonRpcGuard",
    "host_allowed",
    "jsonrpc_id",
    "jsonrpc_refusal",
]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# Fetched by infrastructure by the pod's address (kubelet probes, a Prometheus scrape): no
# Host check (/metrics still needs a token).
ANY_HOST_PATHS = OPEN_PATHS | {"/metrics"}
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
SESSIONS_RETRY_AFTER = 10  # seconds, on the SDK's 503 for a session over the cap
# How many levels a request body wraps a tool's arguments in: {"arguments": ...} on REST,
# {"params": {"arguments": ...}} in a JSON-RPC request.
_WRAPPING = {"/mcp": 2}
_REST_WRAPPING = 1
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_ID_VALUE = re.compile(rb'\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class _Gone(Exception):
    """The client disconnected before its body was complete."""


class AuthAndLimits:
    """ASGI middleware: bearer tokens on everything but /healthz and /readyz, Origin checks for
    /mcp, and the body limits of the module's description."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        principals: Mapping[str, Principal],
        max_body: int,
        allowed_origins: frozenset[str],
        body_timeout: float = 30.0,
        allowed_hosts: frozenset[str] = frozenset({"*"}),
    ) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.principals = principals
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["path"], headers)
        if refusal is not None:
            await _json(send, *refusal)
            return
        scope[SCOPE_KEY] = self._principal(headers)
        try:
            body = await self._body(receive)
        except _TooLarge:
            await _json(send, 413, {"detail": f"request body over {self.max_body} bytes"})
            return
        except _TooSlow:
            detail = f"request body not received within {self.body_timeout:g} s"
            await _json(send, 408, {"detail": detail}, [(b"connection", b"close")])
            return
        except _Gone:
            return
        if await self._too_deep(scope["path"], body, send):
            return
        await self.app(scope, _replay(body, receive), send)

    def _refusal(
        self, path: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]] | None:
        """Status, body and headers of a refusal on the headers alone, or None."""
        host = headers.get("host", "")
        if path not in ANY_HOST_PATHS and not host_allowed(host, self.allowed_hosts):
            refused = f"host {host!r} is not served here (ASYA_GATEWAY_ALLOWED_HOSTS)"
            return 421, {"detail": refused}, []
        if path not in OPEN_PATHS and self._principal(headers) is None:
            detail = {"detail": "missing or invalid bearer token"}
            return 401, detail, [(b"www-authenticate", b'Bearer realm="asya"')]
        origin = headers.get("origin")
        if path.startswith("/mcp") and origin and not self._origin_ok(origin, headers):
            return 403, {"detail": f"origin {origin!r} is not allowed"}, []
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, {"detail": f"request body over {self.max_body} bytes"}, []
        return None

    def _principal(self, headers: dict[str, str]) -> Principal | None:
        """The bearer token's principal; :data:`ANONYMOUS` when there are no tokens."""
        if not self.principals:
            return ANONYMOUS
        auth = headers.get("authorization", "")
        return authenticate(auth[7:] if auth[:7].lower() == "bearer " else "", self.principals)

    async def _body(self, receive: Receive) -> bytes:
        """The whole body, within the size and time limits (bounded: at most ``max_body``
        bytes, at most ``body_timeout`` seconds)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Gone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise _TooLarge
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _TooSlow from None

    async def _too_deep(self, path: str, body: bytes, send: Send) -> bool:
        """Refuse a body whose arguments nest deeper than the limit; True if refused."""
        wrapping = _WRAPPING.get(path, _REST_WRAPPING)
        try:
            check_json(body, max_depth=MAX_JSON_DEPTH + wrapping, what="request body")
        except NestingTooDeepError as exc:
            message = (
                f"arguments nest {exc.depth - wrapping} levels deep; "
                f"the limit is {MAX_JSON_DEPTH} (MAX_JSON_DEPTH)"
            )
        except EnvelopeError:
            return False  # not UTF-8: the route's own parser refuses it as not JSON
        else:
            return False
        if path in _WRAPPING:
            await _jsonrpc_error(send, jsonrpc_id(body), INVALID_PARAMS, message, MAX_JSON_DEPTH)
        else:
            await _json(send, 422, {"detail": message, "limit": MAX_JSON_DEPTH})
        return True

    def _origin_ok(self, origin: str, headers: dict[str, str]) -> bool:
        if origin in self.allowed_origins:
            return True
        # Same origin as the Host the client reached (a browser page served by us).
        return origin.split("://", 1)[-1] == headers.get("host", "")


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """Whether a ``Host`` header names an allowed host: ``*``, the exact ``name:port``, or the
    name (any port) when the allowed item has no port."""
    host = host.lower()
    if "*" in allowed or host in allowed:
        return True
    name, sep, port = host.rpartition(":")
    return bool(sep) and port.isdigit() and not name.endswith(":") and name in allowed


class JsonRpcGuard:
    """ASGI layer in front of the SDK's Streamable HTTP transport: a POSTed JSON body must be
    one valid JSON-RPC 2.0 message, or it is answered here (:func:`jsonrpc_refusal`), so every
    request with an ``id`` gets an answer and every error its exact code. What passes is served
    by the SDK unchanged. It also adds ``Retry-After`` to the SDK's 503 (too many sessions).

    The body was read and bounded by :class:`AuthAndLimits` already.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = _with_retry_after(send)
        if scope["type"] != "http" or scope["method"] != "POST" or not _json_body(scope):
            await self.app(scope, receive, send)
            return
        body = await _whole(receive)
        if body is None:
            return  # the client went away
        refusal = jsonrpc_refusal(body)
        if refusal is not None:
            await _json(send, *refusal)
            return
        await self.app(scope, _replay(body, receive), send)


def jsonrpc_refusal(body: bytes) -> tuple[int, dict[str, Any]] | None:
    """The HTTP status and JSON-RPC error for a body that is not one valid JSON-RPC 2.0
    message, or None to let the SDK serve it.

    -32700 for a body that is not JSON; -32600 for a batch (none of the revisions the SDK
    serves takes one: 2025-06-18 removed them, and the SDK never implemented them for
    2025-03-26), a value that is no message object, a wrong ``jsonrpc``, an ``id`` that is not
    a string or an integer (answered with ``"id": null``), a non-string ``method``, ``params``
    that are not an object, a response without exactly one of ``result`` and ``error``. With a
    valid ``id`` the answer carries it (HTTP 200, the client matches it to its call); without,
    HTTP 400.
    """
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return 400, _rpc_error(None, PARSE_ERROR, "Parse error: the body is not JSON")
    if isinstance(message, list):
        reason = "batches are not supported: send one JSON-RPC message per request"
        return 400, _rpc_error(None, INVALID_REQUEST, f"Invalid Request: {reason}")
    if not isinstance(message, dict):
        reason = "a JSON-RPC message is an object"
        return 400, _rpc_error(None, INVALID_REQUEST, f"Invalid Request: {reason}")
    problem = _message_problem(message)
    if problem is None:
        return None
    request_id = message.get("id")
    if not _valid_id(request_id):
        request_id = None
    status = 200 if request_id is not None else 400
    return status, _rpc_error(request_id, INVALID_REQUEST, f"Invalid Request: {problem}")


def _message_problem(message: dict[str, Any]) -> str | None:
    """What makes a decoded object no JSON-RPC 2.0 message, or None."""
    if message.get("jsonrpc") != "2.0":
        return '"jsonrpc" must be "2.0"'
    if "id" in message and not _valid_id(message["id"]):
        return '"id" must be a string or an integer'
    if "method" in message:
        if not isinstance(message["method"], str):
            return '"method" must be a string'
        if "params" in message and not isinstance(message["params"], dict):
            return '"params" must be an object'
        return None
    if "id" not in message:
        return 'a request needs "method", a response "id"'
    if ("result" in message) == ("error" in message):
        return 'a response has exactly one of "result" and "error"'
    return None


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _rpc_error(request_id: int | str | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _json_body(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


async def _whole(receive: Receive) -> bytes | None:
    """The request body (already bounded upstream), or None if the client disconnected."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _with_retry_after(send: Send) -> Send:
    """``send`` adding ``Retry-After`` to a 503 that has none."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 503:
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"retry-after" for k, _ in headers):
                headers.append((b"retry-after", str(SESSIONS_RETRY_AFTER).encode()))
                message = {**message, "headers": headers}
        await send(message)

    return sending


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then the client's own messages (a
    disconnect, which streaming responses wait for)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def jsonrpc_id(body: bytes) -> int | str | None:
    """The top-level ``id`` of a JSON-RPC request body, found without parsing it (it nests too
    deep to parse): a scan of strings and brackets, linear in the body's size."""
    depth = 0
    for token in _TOKEN.finditer(body):
        text = token.group()
        if text in (b"[", b"{"):
            depth += 1
        elif text in (b"]", b"}"):
            depth -= 1
        elif depth == 1 and text == b'"id"':
            value = _ID_VALUE.match(body, token.end())
            if value is not None:
                found: int | str = json.loads(value.group(1))
                return found
    return None


async def _jsonrpc_error(
    send: Send, request_id: int | str | None, code: int, message: str, limit: int
) -> None:
    error = {"code": code, "message": message, "data": {"limit": limit}}
    # With the request's id, an answer the client matches to its call; without, a 400.
    status = 200 if request_id is not None else 400
    await _json(send, status, {"jsonrpc": "2.0", "id": request_id, "error": error})


async def _json(
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
