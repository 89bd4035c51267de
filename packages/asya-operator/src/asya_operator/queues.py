"""The actor's queue in RabbitMQ: declared and bound as the sidecar expects, deleted on opt-in."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiormq
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

__all__ = ["BrokerUnavailable", "QueueManager"]

_BROKER_ERRORS = (AMQPError, ConnectionError, OSError, ChannelInvalidStateError)


class BrokerUnavailable(Exception):
    """RabbitMQ could not be reached or refused the operation (a temporary error)."""


class QueueManager:
    """One connection, opened on first use and reopened after a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: Any = None
        self._channel: Any = None
        self._connecting: asyncio.Task[Any] | None = None
        self._lock = asyncio.Lock()  # several reconcile workers share one connection

    async def _ch(self) -> Any:
        async with self._lock:
            return await self._open()

    async def _open(self) -> Any:
        if self._channel is None or self._channel.is_closed:
            if self._connection is None or self._connection.is_closed:
                # Shielded: a reconcile cancelled mid-connect must not leave a half-open
                # connection whose tasks nobody owns; close() finishes and closes it.
                self._connecting = asyncio.ensure_future(aiormq.connect(self.url))
                self._connection = await asyncio.shield(self._connecting)
                self._connecting = None
            self._channel = await self._connection.channel()
        return self._channel

    async def ensure(self, exchange: str, queue: str, terminal: tuple[str, ...]) -> int:
        """Declare the durable topic exchange, the queue and the terminal queues, bind each by
        its own name; return the actor queue's depth (ready messages)."""
        try:
            ch = await self._ch()
            await ch.exchange_declare(exchange, exchange_type="topic", durable=True)
            depth = 0
            for name in (queue, *terminal):
                ok = await ch.queue_declare(name, durable=True)
                await ch.queue_bind(name, exchange, routing_key=name)
                if name == queue:
                    depth = int(ok.message_count or 0)
            return depth
        except _BROKER_ERRORS as exc:
            await self.close()
            raise BrokerUnavailable(f"RabbitMQ: {exc or type(exc).__name__}") from exc

    async def delete(self, queue: str) -> None:
        try:
            ch = await self._ch()
            await ch.queue_delete(queue)
        except _BROKER_ERRORS as exc:
            await self.close()
            raise BrokerUnavailable(f"RabbitMQ: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            with contextlib.suppress(*_BROKER_ERRORS, asyncio.CancelledError):
                late = await connecting
                if not late.is_closed:
                    await late.close()
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS):
                await connection.close()
