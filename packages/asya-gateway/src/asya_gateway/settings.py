"""Gateway settings, read once from the environment and validated at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from asya_protocol import (
    DEFAULT_ERROR_END_QUEUE,
    DEFAULT_EVENTS_EXCHANGE,
    DEFAULT_HAPPY_END_QUEUE,
    RouteError,
    validate_queue_name,
)

__all__ = ["GatewaySettings", "SettingsError", "database_url"]


class SettingsError(Exception):
    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable


def database_url(raw: str) -> str:
    """Normalise a database URL to an async SQLAlchemy URL (asyncpg or aiosqlite)."""
    scheme = urlsplit(raw).scheme
    if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        return "postgresql+asyncpg://" + raw.split("://", 1)[1]
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return "sqlite+aiosqlite://" + raw.split("://", 1)[1]
    raise ValueError("expected postgresql://... or sqlite:///path")


def _queue(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    try:
        return validate_queue_name(raw)
    except RouteError as exc:
        raise SettingsError(name, str(exc)) from None


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    database_url: str = "sqlite+aiosqlite:///asya-gateway.db"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = "asya"
    events_exchange: str = DEFAULT_EVENTS_EXCHANGE
    happy_end: str = DEFAULT_HAPPY_END_QUEUE
    error_end: str = DEFAULT_ERROR_END_QUEUE
    events_queue: str = "asya-gateway-events"
    tools_path: str = "tools.yaml"
    host: str = "127.0.0.1"
    port: int = 8000
    tokens: frozenset[str] = frozenset()
    max_body: int = 1_048_576
    allowed_origins: frozenset[str] = frozenset()
    migrate: bool = True
    default_timeout: float = 3600.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        raw_db = env.get("ASYA_DATABASE_URL", "").strip() or cls.database_url
        try:
            db = database_url(raw_db)
        except ValueError as exc:
            raise SettingsError("ASYA_DATABASE_URL", str(exc)) from None
        amqp = env.get("ASYA_RABBITMQ_URL", "").strip() or cls.rabbitmq_url
        if urlsplit(amqp).scheme not in ("amqp", "amqps"):
            raise SettingsError(
                "ASYA_RABBITMQ_URL", "expected amqp://user:password@host:port/vhost"
            )
        tokens = frozenset(
            t.strip() for t in env.get("ASYA_GATEWAY_TOKENS", "").split(",") if t.strip()
        )
        if not tokens and env.get("ASYA_GATEWAY_AUTH", "required").strip().lower() != "disabled":
            raise SettingsError(
                "ASYA_GATEWAY_TOKENS",
                "set at least one bearer token (or ASYA_GATEWAY_AUTH=disabled for a local run)",
            )
        port_raw = env.get("ASYA_GATEWAY_PORT", "").strip() or "8000"
        if not port_raw.isdigit() or not 0 <= int(port_raw) <= 65535:
            raise SettingsError("ASYA_GATEWAY_PORT", f"expected 0..65535, got {port_raw!r}")
        body_raw = env.get("ASYA_GATEWAY_MAX_BODY", "").strip() or str(cls.max_body)
        if not body_raw.isdigit() or int(body_raw) < 1024:
            raise SettingsError(
                "ASYA_GATEWAY_MAX_BODY", f"expected bytes >= 1024, got {body_raw!r}"
            )
        migrate = env.get("ASYA_GATEWAY_MIGRATE", "true").strip().lower()
        if migrate not in ("true", "false"):
            raise SettingsError("ASYA_GATEWAY_MIGRATE", f"expected true or false, got {migrate!r}")
        timeout_raw = env.get("ASYA_GATEWAY_DEFAULT_TIMEOUT", "").strip() or "3600"
        try:
            timeout = float(timeout_raw)
        except ValueError:
            raise SettingsError(
                "ASYA_GATEWAY_DEFAULT_TIMEOUT", f"expected seconds, got {timeout_raw!r}"
            ) from None
        if not timeout > 0:
            raise SettingsError("ASYA_GATEWAY_DEFAULT_TIMEOUT", "must be > 0")
        level = (env.get("ASYA_LOG_LEVEL", "").strip() or "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(
                "ASYA_LOG_LEVEL", f"expected DEBUG, INFO, WARNING or ERROR, got {level!r}"
            )
        origins = frozenset(
            o.strip() for o in env.get("ASYA_GATEWAY_ALLOWED_ORIGINS", "").split(",") if o.strip()
        )
        return cls(
            database_url=db,
            rabbitmq_url=amqp,
            exchange=_queue(env, "ASYA_RABBITMQ_EXCHANGE", "asya"),
            events_exchange=_queue(env, "ASYA_EVENTS_EXCHANGE", DEFAULT_EVENTS_EXCHANGE),
            happy_end=_queue(env, "ASYA_HAPPY_END_QUEUE", DEFAULT_HAPPY_END_QUEUE),
            error_end=_queue(env, "ASYA_ERROR_END_QUEUE", DEFAULT_ERROR_END_QUEUE),
            events_queue=_queue(env, "ASYA_GATEWAY_EVENTS_QUEUE", "asya-gateway-events"),
            tools_path=env.get("ASYA_GATEWAY_TOOLS", "").strip() or "tools.yaml",
            host=env.get("ASYA_GATEWAY_HOST", "").strip() or "127.0.0.1",
            port=int(port_raw),
            tokens=tokens,
            max_body=int(body_raw),
            allowed_origins=origins,
            migrate=migrate == "true",
            default_timeout=timeout,
            log_level=level,
        )
