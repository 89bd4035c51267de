"""One reconnect backoff for every loop that waits for a broker, a database or an API server.

Delays grow from ``initial`` by ``factor`` up to ``maximum`` and are spread by ``jitter`` (each
delay times a random factor in [1 - jitter, 1 + jitter]) so that many replicas do not reconnect
in step. The default ceiling is 2 s: after an outage, work resumes within about 2 s of the
service answering again, whatever the outage's length. ``reset()`` after a success.

    backoff = Backoff()
    while True:
        try:
            await serve()
            backoff.reset()
        except ConnectionError:
            await backoff.sleep()
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from .errors import ArgumentError

__all__ = ["RECONNECT_MAX_DELAY", "Backoff"]

RECONNECT_MAX_DELAY = 2.0
"""The ceiling of every reconnect delay, in seconds."""


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = RECONNECT_MAX_DELAY
    factor: float = 2.0
    jitter: float = 0.2
    random_unit: random.Random = field(default_factory=random.Random, repr=False)
    attempts: int = 0
    """Failures since the last :meth:`reset`."""

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ArgumentError("need 0 < initial <= maximum")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ArgumentError("need factor >= 1 and 0 <= jitter < 1")

    def next_delay(self) -> float:
        """The delay before the next attempt (counts one failure)."""
        base = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        spread = 1.0 + self.jitter * (2.0 * self.random_unit.random() - 1.0)
        return min(self.maximum, base * spread)

    async def sleep(self) -> float:
        """Sleep for :meth:`next_delay` and return how long that was."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        self.attempts = 0
