"""The settings of an actor's two containers, defined once: names, defaults and bounds.

The sidecar and the runtime read these classes from their environment at start
(``load(SidecarSettings)``); the operator builds each container's env from the same fields
(:func:`~asya_protocol.settings.render`), so a variable's name, default and bounds are written
in this module and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .console import EventLoop, event_loop
from .envelope import validate_queue_name
from .events import DEFAULT_EVENTS_EXCHANGE, EventScope
from .framing import DEFAULT_MAX_FRAME_SIZE
from .job_control import DEFAULT_CONTROL_EXCHANGE
from .messages import HandlerMode, validate_error_code
from .routing import DEFAULT_ERROR_END_QUEUE, DEFAULT_HAPPY_END_QUEUE
from .settings import (
    absolute_path,
    amqp_url,
    choice,
    group,
    integer,
    listed,
    load,
    log_level,
    number,
    text,
    var,
)

__all__ = [
    "DEFAULT_EXCHANGE",
    "DEFAULT_SOCKET_PATH",
    "MAX_SOCKET_PATH_BYTES",
    "RetryPolicy",
    "RuntimeSettings",
    "SidecarSettings",
]

DEFAULT_SOCKET_PATH = "/var/run/asya/runtime.sock"
"""Where the runtime listens and the sidecar connects, inside the pod's shared volume."""
DEFAULT_EXCHANGE = "asya"
"""The direct exchange every actor queue is bound to (routing key = queue name)."""
MAX_SOCKET_PATH_BYTES = 107
"""A Unix socket path longer than this cannot be bound (``sun_path`` is 108 bytes with NUL)."""


def _socket_path(raw: str) -> str:
    absolute_path(raw)
    if len(os.fsencode(raw)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"longer than the {MAX_SOCKET_PATH_BYTES} bytes a Unix socket path allows")
    return raw


def _port(raw: str) -> int | None:
    if raw.lower() == "off":
        return None
    return integer(0, 65535)(raw)


def _write_port(value: int | None) -> str:
    return "off" if value is None else str(value)


def _batch_window(raw: str) -> float | None:
    if raw.lower() == "off":
        return None
    return number(0.0, 1.0)(raw)


def _write_batch_window(value: float | None) -> str:
    return "off" if value is None else f"{value:g}"


def _write_optional(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failing step is tried again. ``max_attempts=1`` (the default) means never."""

    max_attempts: int = var("ASYA_RETRY_MAX_ATTEMPTS", integer(1, 1000), default=1)
    base_delay: float = var("ASYA_RETRY_BASE_DELAY", number(0.0, 86_400), default=1.0)
    max_delay: float = var("ASYA_RETRY_MAX_DELAY", number(0.0, 86_400), default=300.0)
    jitter: float = var("ASYA_RETRY_JITTER", number(0.0, 1.0), default=0.2)
    """Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""
    codes: frozenset[str] = var(
        "ASYA_RETRY_CODES", listed(validate_error_code), default=frozenset()
    )
    """Error codes retried even when the runtime did not mark the error retryable."""

    def delay(self, attempt: int, random_unit: float) -> float:
        """Seconds to wait before attempt ``attempt + 1``; ``random_unit`` within [0, 1)."""
        base = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        factor = 1.0 + self.jitter * (2.0 * random_unit - 1.0)
        return float(max(0.0, base * factor))


@dataclass(frozen=True, kw_only=True)
class SidecarSettings:
    """Every setting of the sidecar. Build with ``load(SidecarSettings)`` or :meth:`from_env`."""

    actor: str = var(
        "ASYA_ACTOR_NAME", validate_queue_name, required="name the queue this actor consumes"
    )
    rabbitmq_url: str = var(
        "ASYA_RABBITMQ_URL", amqp_url, default="amqp://guest:guest@127.0.0.1:5672/"
    )
    exchange: str = var("ASYA_RABBITMQ_EXCHANGE", validate_queue_name, default=DEFAULT_EXCHANGE)
    socket_path: str = var("ASYA_SOCKET_PATH", _socket_path, default=DEFAULT_SOCKET_PATH)
    runtime_timeout: float = var("ASYA_RUNTIME_TIMEOUT", number(0.001), default=300.0)
    happy_end: str = var(
        "ASYA_HAPPY_END_QUEUE", validate_queue_name, default=DEFAULT_HAPPY_END_QUEUE
    )
    error_end: str = var(
        "ASYA_ERROR_END_QUEUE", validate_queue_name, default=DEFAULT_ERROR_END_QUEUE
    )
    concurrency: int = var("ASYA_CONCURRENCY", integer(1, 10_000), default=1)
    retry: RetryPolicy = group(RetryPolicy)
    redelivery_limit: int = var("ASYA_REDELIVERY_LIMIT", integer(0, 1000), default=5)
    events_exchange: str = var(
        "ASYA_EVENTS_EXCHANGE", validate_queue_name, default=DEFAULT_EVENTS_EXCHANGE, empty=""
    )
    """Where step events go; set to empty to disable them."""
    step_events: EventScope = var("ASYA_STEP_EVENTS", choice(EventScope), default=EventScope.JOBS)
    """Which messages get step events: ``jobs`` (a gateway job's, without ``received``) or
    ``all``."""
    progress_interval: float = var("ASYA_PROGRESS_INTERVAL", number(0.0, 60.0), default=0.1)
    """Seconds a step's ``started`` and ``progress`` events are held: a step that ends sooner
    publishes only its ``done``, which carries the message of its last progress; a longer one
    publishes ``started`` once this long has passed, then the latest progress at most once per
    interval. 0 publishes each at once."""
    events_batch_window: float | None = var(
        "ASYA_EVENTS_BATCH_WINDOW", _batch_window, default=0.01, write=_write_batch_window
    )
    """On RabbitMQ, advisory step events go out together, at most one message per this many
    seconds (a JSON array, routing key ``<actor>.batch``; one event alone goes as itself,
    routing key ``<actor>.<type>``): after a quiet window at once, under load after at most
    the window. 0: the events of each turn of the event loop together. ``off`` (None): each
    event on its own, always. A fan-out's ``done`` and ``partial`` events are never held."""
    control_exchange: str = var(
        "ASYA_CONTROL_EXCHANGE", validate_queue_name, default=DEFAULT_CONTROL_EXCHANGE, empty=""
    )
    """The fanout exchange the gateway announces cancelled jobs on; empty to not listen."""
    runtime_wait: float = var("ASYA_RUNTIME_WAIT", number(0.0), default=60.0)
    shutdown_grace: float = var("ASYA_SHUTDOWN_GRACE", number(0.0), default=30.0)
    http_host: str = var("ASYA_HTTP_HOST", text, default="0.0.0.0")  # noqa: S104 - pod IP
    """Probes reach the pod's IP; set 127.0.0.1 to run locally."""
    http_port: int | None = var("ASYA_HTTP_PORT", _port, default=8080, write=_write_port)
    """Port of the probe server; 0 picks a free one; ``off`` (None) disables it."""
    max_frame_size: int = var("ASYA_MAX_FRAME_SIZE", integer(1024), default=DEFAULT_MAX_FRAME_SIZE)
    log_level: str = var("ASYA_LOG_LEVEL", log_level, default="INFO")
    event_loop: EventLoop = var("ASYA_EVENT_LOOP", event_loop, default=EventLoop.AUTO)
    """``auto`` (uvloop if installed), ``uvloop`` or ``asyncio``."""
    exit_when_idle: float | None = var(
        "ASYA_EXIT_WHEN_IDLE", number(0.001), default=None, write=_write_optional
    )
    """Exit (status 0) after this many seconds with no message: for Job workloads."""
    batch_max_size: int | None = var(
        "ASYA_BATCH_MAX_SIZE", integer(1, 10_000), default=None, write=_write_optional
    )
    """Cap on the items per batch for a batch handler (the smaller of this and the handler's
    ``max_size`` applies); 1 turns batching off. Unset: the handler's own limit."""
    batch_max_wait: float | None = var(
        "ASYA_BATCH_MAX_WAIT", number(0.0, 60.0), default=None, write=_write_optional
    )
    """Cap, in seconds, on how long a batch waits to fill after its first delivery (the smaller
    of this and the handler's ``max_wait``). Unset: the handler's own."""
    partial_max_bytes: int = var(
        "ASYA_PARTIAL_MAX_BYTES", integer(64, 16 * 1024 * 1024), default=65536
    )
    """Largest partial result (its JSON, bytes) forwarded as is, and the most bytes of partial
    results one ``partial`` event carries; a larger one is replaced by a marker."""
    partial_interval: float = var("ASYA_PARTIAL_INTERVAL", number(0.0, 60.0), default=0.1)
    """Seconds between two ``partial`` events of one message: partial results that arrive in
    between are published together, in order, as one event."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SidecarSettings:
        return load(cls, env)


@dataclass(frozen=True, kw_only=True)
class RuntimeSettings:
    """Every setting of the runtime. Build with ``load(RuntimeSettings)`` or :meth:`from_env`."""

    handler: str = var("ASYA_HANDLER", text, required="name the handler as package.module:function")
    socket_path: str = var("ASYA_SOCKET_PATH", _socket_path, default=DEFAULT_SOCKET_PATH)
    mode: HandlerMode = var("ASYA_HANDLER_MODE", choice(HandlerMode), default=HandlerMode.PAYLOAD)
    concurrency: int = var("ASYA_RUNTIME_CONCURRENCY", integer(1), default=4)
    runtime_timeout: float = var("ASYA_RUNTIME_TIMEOUT", number(0.001), default=300.0)
    """The sidecar's per-request timeout, read by the runtime too (one value for both
    containers): an async handler running longer is cancelled, a sync one makes it not ready."""
    stuck_exit: float = var("ASYA_HANDLER_STUCK_EXIT", number(0.0), default=30.0)
    """Seconds a handler may stay stuck past the timeout before the runtime exits (status 70)."""
    max_frame_size: int = var("ASYA_MAX_FRAME_SIZE", integer(1024), default=DEFAULT_MAX_FRAME_SIZE)
    shutdown_grace: float = var("ASYA_SHUTDOWN_GRACE", number(0.0), default=30.0)
    traceback_limit: int = var("ASYA_TRACEBACK_LIMIT", integer(0), default=4000)
    log_level: str = var("ASYA_LOG_LEVEL", log_level, default="INFO")
    event_loop: EventLoop = var("ASYA_EVENT_LOOP", event_loop, default=EventLoop.AUTO)
    """``auto`` (uvloop if installed), ``uvloop`` or ``asyncio``."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        return load(cls, env)
