"""Sidecar settings: read once from the environment at start, validated, frozen."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from asya_protocol import (
    DEFAULT_ERROR_END_QUEUE,
    DEFAULT_EVENTS_EXCHANGE,
    DEFAULT_HAPPY_END_QUEUE,
    DEFAULT_MAX_FRAME_SIZE,
    RouteError,
    validate_error_code,
    validate_queue_name,
)
from asya_protocol.errors import ProtocolError

from .errors import SettingsError

__all__ = ["RetryPolicy", "SidecarSettings"]

T = TypeVar("T")


def _parse(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except (ValueError, RouteError, ProtocolError) as exc:
        raise SettingsError(name, f"{exc} (got {raw!r})") from None


def _number(minimum: float, maximum: float = float("inf")) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not minimum <= value <= maximum:  # also refuses nan
            raise ValueError(f"must be within {minimum}..{maximum}")
        return value

    return parse


def _integer(minimum: int, maximum: int = 2**31) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be within {minimum}..{maximum}")
        return value

    return parse


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _amqp_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError("expected amqp://user:password@host:port/vhost")
    return raw


def _codes(raw: str) -> frozenset[str]:
    return frozenset(validate_error_code(c.strip()) for c in raw.split(",") if c.strip())


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failing step is tried again. ``max_attempts=1`` (the default) means never."""

    max_attempts: int = 1
    base_delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.2
    """Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""
    codes: frozenset[str] = frozenset()
    """Error codes retried even when the runtime did not mark the error retryable."""

    def delay(self, attempt: int, random_unit: float) -> float:
        """Seconds to wait before attempt ``attempt + 1``; ``random_unit`` within [0, 1)."""
        base = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        factor = 1.0 + self.jitter * (2.0 * random_unit - 1.0)
        return float(max(0.0, base * factor))


@dataclass(frozen=True, kw_only=True)
class SidecarSettings:
    actor: str
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = "asya"
    socket_path: str = "/var/run/asya/runtime.sock"
    runtime_timeout: float = 300.0
    happy_end: str = DEFAULT_HAPPY_END_QUEUE
    error_end: str = DEFAULT_ERROR_END_QUEUE
    concurrency: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    redelivery_limit: int = 5
    events_exchange: str = DEFAULT_EVENTS_EXCHANGE
    """Where step events go; empty disables them."""
    runtime_wait: float = 60.0
    shutdown_grace: float = 30.0
    http_host: str = "0.0.0.0"  # noqa: S104 - probes reach the pod's IP; set 127.0.0.1 locally
    http_port: int | None = 8080
    """Port of the probe server; 0 picks a free one; None (``off``) disables it."""
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    log_level: str = "INFO"
    exit_when_idle: float | None = None
    """Exit (status 0) after this many seconds with no message: for Job workloads."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SidecarSettings:
        env = os.environ if env is None else env
        actor = env.get("ASYA_ACTOR_NAME", "").strip()
        if not actor:
            raise SettingsError("ASYA_ACTOR_NAME", "not set; name the queue this actor consumes")
        actor = _parse(env, "ASYA_ACTOR_NAME", actor, validate_queue_name)
        level = _parse(env, "ASYA_LOG_LEVEL", "INFO", _log_level)
        socket_path = _parse(env, "ASYA_SOCKET_PATH", cls.socket_path, _absolute_path)
        return cls(
            actor=actor,
            rabbitmq_url=_parse(env, "ASYA_RABBITMQ_URL", cls.rabbitmq_url, _amqp_url),
            exchange=_parse(env, "ASYA_RABBITMQ_EXCHANGE", "asya", validate_queue_name),
            socket_path=socket_path,
            runtime_timeout=_parse(env, "ASYA_RUNTIME_TIMEOUT", 300.0, _number(0.001)),
            happy_end=_parse(env, "ASYA_HAPPY_END_QUEUE", cls.happy_end, validate_queue_name),
            error_end=_parse(env, "ASYA_ERROR_END_QUEUE", cls.error_end, validate_queue_name),
            concurrency=_parse(env, "ASYA_CONCURRENCY", 1, _integer(1, 10_000)),
            retry=RetryPolicy(
                max_attempts=_parse(env, "ASYA_RETRY_MAX_ATTEMPTS", 1, _integer(1, 1000)),
                base_delay=_parse(env, "ASYA_RETRY_BASE_DELAY", 1.0, _number(0.0, 86_400)),
                max_delay=_parse(env, "ASYA_RETRY_MAX_DELAY", 300.0, _number(0.0, 86_400)),
                jitter=_parse(env, "ASYA_RETRY_JITTER", 0.2, _number(0.0, 1.0)),
                codes=_parse(env, "ASYA_RETRY_CODES", frozenset(), _codes),
            ),
            redelivery_limit=_parse(env, "ASYA_REDELIVERY_LIMIT", 5, _integer(0, 1000)),
            events_exchange=_events_exchange(env),
            runtime_wait=_parse(env, "ASYA_RUNTIME_WAIT", 60.0, _number(0.0)),
            shutdown_grace=_parse(env, "ASYA_SHUTDOWN_GRACE", 30.0, _number(0.0)),
            http_host=env.get("ASYA_HTTP_HOST", "").strip() or cls.http_host,
            http_port=_parse(env, "ASYA_HTTP_PORT", cls.http_port, _port),
            max_frame_size=_parse(
                env, "ASYA_MAX_FRAME_SIZE", DEFAULT_MAX_FRAME_SIZE, _integer(1024)
            ),
            log_level=level,
            exit_when_idle=_parse(env, "ASYA_EXIT_WHEN_IDLE", None, _number(0.001)),
        )


def _events_exchange(env: Mapping[str, str]) -> str:
    if "ASYA_EVENTS_EXCHANGE" in env and env["ASYA_EVENTS_EXCHANGE"].strip() == "":
        return ""  # explicitly disabled
    return _parse(env, "ASYA_EVENTS_EXCHANGE", DEFAULT_EVENTS_EXCHANGE, validate_queue_name)


def _port(raw: str) -> int | None:
    if raw.lower() == "off":
        return None
    return _integer(0, 65535)(raw)


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def _absolute_path(raw: str) -> str:
    if not os.path.isabs(raw):
        raise ValueError("expected an absolute path")
    return raw
