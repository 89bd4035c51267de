"""The gateway's broker side on the in-process broker, for ``asya dev``."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import msgspec

from asya_gateway import PublishFailed
from asya_gateway.jobs import JOB_HEADER, JobStore
from asya_protocol import decode_event
from asya_sidecar import MemoryBroker, Unroutable

__all__ = ["MemoryGatewayBroker"]

log = logging.getLogger("asya_cli.gateway")


class MemoryGatewayBroker:
    def __init__(
        self, broker: MemoryBroker, store: JobStore, *, happy_end: str, error_end: str
    ) -> None:
        self.broker = broker
        self.store = store
        self.happy_end = happy_end
        self.error_end = error_end
        self.connected = asyncio.Event()
        self._events: asyncio.Queue[bytes] = asyncio.Queue()
        broker.declare(happy_end)
        broker.declare(error_end)
        broker.event_listeners.append(lambda _key, body: self._events.put_nowait(body))

    async def publish_job(self, envelope: dict[str, Any]) -> None:
        first = envelope["route"]["steps"][0]
        try:
            await self.broker.publish(first, json.dumps(envelope).encode())
        except Unroutable:
            raise PublishFailed(f"no actor consumes the first step {first!r}") from None

    async def consume(self) -> None:
        self.connected.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._terminal(self.happy_end, ok=True))
            tg.create_task(self._terminal(self.error_end, ok=False))
            tg.create_task(self._steps())

    async def _terminal(self, queue: str, *, ok: bool) -> None:
        source = self.broker.queue(queue)
        while True:
            message = await source.get()
            try:
                envelope = json.loads(message.body)
            except ValueError as exc:
                log.warning("ignoring an unreadable message in %s: %s", queue, exc)
                continue
            job_id = (envelope.get("headers") or {}).get(JOB_HEADER)
            if job_id:
                await self.store.on_terminal(job_id, envelope, ok=ok)

    async def _steps(self) -> None:
        while True:
            body = await self._events.get()
            try:
                event = decode_event(body)
            except (ValueError, msgspec.DecodeError) as exc:
                log.warning("ignoring an unreadable step event: %s", exc)
                continue
            job_id = event.headers.get(JOB_HEADER)
            if job_id:
                await self.store.on_steps(job_id, [event])

    async def close(self) -> None:
        self.connected.clear()
