"""Gateway settings, read once from the environment and validated at start, on the shared
mechanism of :mod:`asya_protocol.settings` (a bad value is a ``SettingsError`` naming it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from asya_protocol import DEFAULT_EVENTS_EXCHANGE, SettingsError, validate_queue_name
from asya_protocol.actor_settings import SidecarSettings
from asya_protocol.console import EventLoop
from asya_protocol.settings import boolean, choice, integer, listed, load, number, text, var

from . import principals
from .retention import DEFAULT_RETENTION

__all__ = ["LOOPBACK_HOSTS", "AuthMode", "GatewaySettings", "SettingsError", "database_url"]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
"""Hosts always allowed in the ``Host`` header (any port): a local client, a port-forward."""
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names, not a bind


class AuthMode(StrEnum):
    REQUIRED = "required"
    DISABLED = "disabled"  # no tokens: a local run only


def database_url(raw: str) -> str:
    """Normalise a database URL to an async SQLAlchemy URL (asyncpg or aiosqlite)."""
    scheme = urlsplit(raw).scheme
    if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        return "postgresql+asyncpg://" + raw.split("://", 1)[1]
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return "sqlite+aiosqlite://" + raw.split("://", 1)[1]
    raise ValueError("expected postgresql://... or sqlite:///path")


def _auth(raw: str) -> AuthMode:
    return choice(AuthMode)(raw.lower())


def _as_actors(variable: str) -> Any:
    """A field read exactly as the actors read ``variable`` (the same parser and default),
    from its one definition in :class:`asya_protocol.actor_settings.SidecarSettings`."""
    for f in dataclasses.fields(SidecarSettings):
        spec = f.metadata.get("env")
        if spec is not None and spec.name == variable:
            return dataclasses.field(default=f.default, metadata=f.metadata)
    raise KeyError(variable)


def host_name(raw: str) -> str:
    """One ``ASYA_GATEWAY_ALLOWED_HOSTS`` item: ``name``, ``name:port``, ``[v6]``, or ``*``."""
    name = raw.lower()
    if name != "*" and (any(c in name for c in "/@ ") or name.startswith(":")):
        raise ValueError(f"{raw!r} is not a host name (host or host:port, no scheme or path)")
    return name


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """Every setting of the gateway. Build with :meth:`from_env` (or directly, in tests)."""

    database_url: str = var(
        "ASYA_DATABASE_URL", database_url, default="sqlite+aiosqlite:///asya-gateway.db"
    )
    rabbitmq_url: str = _as_actors("ASYA_RABBITMQ_URL")
    exchange: str = _as_actors("ASYA_RABBITMQ_EXCHANGE")
    events_exchange: str = var(
        "ASYA_EVENTS_EXCHANGE", validate_queue_name, default=DEFAULT_EVENTS_EXCHANGE
    )
    control_exchange: str = _as_actors("ASYA_CONTROL_EXCHANGE")
    """Where cancelled jobs are announced to the sidecars; empty to announce nothing."""
    happy_end: str = _as_actors("ASYA_HAPPY_END_QUEUE")
    error_end: str = _as_actors("ASYA_ERROR_END_QUEUE")
    events_queue: str = var(
        "ASYA_GATEWAY_EVENTS_QUEUE", validate_queue_name, default="asya-gateway-events"
    )
    tools_path: str = var("ASYA_GATEWAY_TOOLS", text, default="tools.yaml")
    host: str = var("ASYA_GATEWAY_HOST", text, default="127.0.0.1")
    port: int = var("ASYA_GATEWAY_PORT", integer(0, 65535), default=8000)
    tokens: frozenset[str] = var(
        "ASYA_GATEWAY_TOKENS", listed(principals.credential), default=frozenset()
    )
    """Bearer tokens, each ``name:token`` or a bare ``token`` (see :mod:`.principals`)."""
    admins: frozenset[str] = var("ASYA_GATEWAY_ADMINS", listed(), default=frozenset())
    """Principals (names in ``ASYA_GATEWAY_TOKENS``) that see and cancel every job."""
    auth: AuthMode = var("ASYA_GATEWAY_AUTH", _auth, default=AuthMode.REQUIRED)
    max_body: int = var("ASYA_GATEWAY_MAX_BODY", integer(1024), default=1_048_576)
    body_timeout: float = var("ASYA_GATEWAY_BODY_TIMEOUT", number(0.0, above=True), default=30.0)
    """Seconds a client has to send a whole request body (408 after)."""
    allowed_origins: frozenset[str] = var(
        "ASYA_GATEWAY_ALLOWED_ORIGINS", listed(), default=frozenset()
    )
    allowed_hosts: frozenset[str] = var(
        "ASYA_GATEWAY_ALLOWED_HOSTS", listed(host_name), default=frozenset()
    )
    """Host headers served besides the bound address and :data:`LOOPBACK_HOSTS` (421 for
    others): ``name`` (any port) or ``name:port``; ``*`` serves any Host."""
    max_sessions: int = var("ASYA_GATEWAY_MAX_SESSIONS", integer(1), default=1000)
    """Open MCP sessions (handshake revisions) at most; a new one over it gets 503."""
    session_idle_timeout: float = var(
        "ASYA_GATEWAY_SESSION_IDLE_TIMEOUT", number(0.0, 7 * 86400.0, above=True), default=600.0
    )
    """Seconds an MCP session may stay without a request in flight before it is closed."""
    migrate: bool = var("ASYA_GATEWAY_MIGRATE", boolean, default=True)
    default_timeout: float = var(
        "ASYA_GATEWAY_DEFAULT_TIMEOUT", number(0.0, above=True), default=3600.0
    )
    job_retention: float = var(
        "ASYA_GATEWAY_JOB_RETENTION", number(0.0, above=True), default=DEFAULT_RETENTION
    )
    """Seconds a job is kept from its creation once finished (then purged with its history);
    MCP tasks report it as ``ttl``."""
    unhealthy_after: float = var(
        "ASYA_GATEWAY_UNHEALTHY_AFTER", number(0.0, above=True), default=120.0
    )
    """Seconds a supervised task may keep failing before /healthz answers 503."""
    log_level: str = _as_actors("ASYA_LOG_LEVEL")
    event_loop: EventLoop = _as_actors("ASYA_EVENT_LOOP")  # noqa: RUF009 - a field()
    """uvicorn's loop: ``auto`` (uvloop if installed), ``uvloop`` or ``asyncio``."""

    def __post_init__(self) -> None:
        if not self.tokens and self.auth is not AuthMode.DISABLED:
            raise ValueError(
                "ASYA_GATEWAY_TOKENS: set at least one bearer token "
                "(or ASYA_GATEWAY_AUTH=disabled for a local run)"
            )
        try:
            principals.principals(self.tokens, self.admins)
        except ValueError as exc:
            raise ValueError(f"ASYA_GATEWAY_TOKENS: {exc}") from None
        unknown = sorted(self.admins - principals.names(self.tokens))
        if unknown:
            raise ValueError(
                f"ASYA_GATEWAY_ADMINS: {', '.join(unknown)} named by no name:token of "
                "ASYA_GATEWAY_TOKENS"
            )

    def token_principals(self) -> dict[str, principals.Principal]:
        """Token to principal (empty: no tokens, authentication disabled)."""
        return principals.principals(self.tokens, self.admins)

    def served_hosts(self) -> frozenset[str]:
        """Every allowed ``Host`` (see :attr:`allowed_hosts`); contains ``*`` to allow any."""
        bound = frozenset() if self.host in _WILDCARD_BINDS else {_bracketed(self.host.lower())}
        return LOOPBACK_HOSTS | bound | self.allowed_hosts

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        """From ``env`` (default: the process environment, read by ``load``)."""
        return load(cls, env)


def _bracketed(host: str) -> str:
    """An IPv6 address as it appears in a Host header."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
