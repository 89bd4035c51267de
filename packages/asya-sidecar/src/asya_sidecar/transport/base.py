"""The transport interface the consumer is written against (RabbitMQ, or in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from ..decision import Outgoing

__all__ = ["ControlHandler", "Delivery", "Transport"]

ControlHandler = Callable[[bytes], None]
"""Takes the body of a control message (from the control exchange); must not block or raise."""


class Delivery(Protocol):
    body: bytes
    redelivered: bool
    redeliveries: int
    """The count carried in the ``x-asya-redeliveries`` header (0 when absent)."""

    async def ack(self) -> None: ...

    async def nack(self) -> None:
        """Give the message back to the broker (requeue): it will be delivered again."""
        ...


class Transport(Protocol):
    """One actor's view of the broker."""

    async def connect(self) -> None: ...

    async def setup(self) -> None:
        """Declare what the actor needs (exchange, its queue and binding, terminal queues) and,
        when it listens for control messages, start receiving them."""
        ...

    def deliveries(self) -> AsyncIterator[Delivery]:
        """The actor's deliveries, at most ``concurrency`` unacknowledged at a time; ends when
        :meth:`stop_consuming` is called or the connection is lost (then it raises)."""
        ...

    async def stop_consuming(self) -> None: ...

    async def publish(self, out: Outgoing) -> None:
        """Publish and wait for the broker's confirm.

        Raises :class:`~asya_sidecar.errors.Unroutable` when no queue takes the message and
        :class:`~asya_sidecar.errors.TransportError` when the broker does not confirm it.
        """
        ...

    async def publish_event(
        self, routing_key: str, body: bytes, *, confirmed: bool = False
    ) -> None:
        """Publish a step event: best effort (no confirm awaited), or with ``confirmed`` as a
        persistent message whose confirm is awaited (:class:`TransportError` if it fails)."""
        ...

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...

    @property
    def control_listening(self) -> bool:
        """Whether control messages (cancelled jobs) reach this transport's handler."""
        ...
