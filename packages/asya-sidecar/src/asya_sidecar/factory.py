"""Build a :class:`Sidecar` on RabbitMQ or on the in-process broker from its settings."""

from __future__ import annotations

from .consumer import Sidecar
from .settings import SidecarSettings
from .transport.amqp import AmqpTransport
from .transport.memory import MemoryBroker, MemoryTransport

__all__ = ["amqp_sidecar", "memory_sidecar"]


def amqp_sidecar(settings: SidecarSettings) -> Sidecar:
    """A sidecar on RabbitMQ (a new connection per session, so it reconnects)."""

    def transport() -> AmqpTransport:
        return AmqpTransport(
            settings.rabbitmq_url,
            exchange=settings.exchange,
            queue=settings.actor,
            terminal=(settings.happy_end, settings.error_end),
            prefetch=sidecar.prefetch,
            events_exchange=settings.events_exchange,
            events_batch_window=settings.events_batch_window,
            control_exchange=settings.control_exchange,
            on_control=sidecar.on_control if settings.control_exchange else None,
        )

    sidecar = Sidecar(settings, transport)  # the prefetch is known once the runtime said hello
    return sidecar


def memory_sidecar(broker: MemoryBroker, settings: SidecarSettings) -> Sidecar:
    """A sidecar on the in-process broker (single-process development runs)."""

    def transport() -> MemoryTransport:
        return MemoryTransport(
            broker,
            queue=settings.actor,
            terminal=(settings.happy_end, settings.error_end),
            prefetch=sidecar.prefetch,
            on_control=sidecar.on_control if settings.control_exchange else None,
        )

    sidecar = Sidecar(settings, transport)  # the prefetch is known once the runtime said hello
    return sidecar
