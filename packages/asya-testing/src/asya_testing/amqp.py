"""Per-test RabbitMQ names, so tests sharing one broker never see each other's messages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["AmqpNames", "isolated_names"]


@dataclass
class AmqpNames:
    """Unique names for one test. ``queue("inference")`` -> ``"inference-<suffix>"``.

    Every name handed out is deleted from the broker when the test ends.
    """

    suffix: str
    exchange: str
    queues: list[str] = field(default_factory=list)

    def queue(self, base: str) -> str:
        name = f"{base}-{self.suffix}"
        if name not in self.queues:
            self.queues.append(name)
        return name

    @property
    def happy_end(self) -> str:
        return self.queue("happy-end")

    @property
    def error_end(self) -> str:
        return self.queue("error-end")


@asynccontextmanager
async def isolated_names(url: str) -> AsyncIterator[AmqpNames]:
    import aiormq  # noqa: PLC0415 - optional dependency of asya-testing

    suffix = uuid.uuid4().hex[:10]
    names = AmqpNames(suffix=suffix, exchange=f"asya-test-{suffix}")
    try:
        yield names
    finally:
        connection = await aiormq.connect(url)
        try:
            channel = await connection.channel()
            for queue in names.queues:
                await channel.queue_delete(queue)
            await channel.exchange_delete(names.exchange)
            # Retry/delay queues and the events exchange are named from the same suffix.
        finally:
            await connection.close()
