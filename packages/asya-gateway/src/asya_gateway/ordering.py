"""Step events before results: a terminal message waits until the step events received before
it have been applied.

Both come from the sidecars, on different queues: the last step publishes its ``partial`` and
``progress`` events (partial ones confirmed) before its result, but a consumer applies step
events in small batches and a terminal message at once, so a job could end (and its followers'
streams with it) before its last step's partial results are in its history. A terminal message
therefore first waits, at most :data:`STEP_EVENTS_WAIT` seconds (step events are advisory), for
the step events already received to be applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

__all__ = ["STEP_EVENTS_WAIT", "StepEventsFirst"]

log = logging.getLogger("asya_gateway")

STEP_EVENTS_WAIT = 5.0


class StepEventsFirst:
    """Counts step events received and applied; :meth:`caught_up` waits for the former."""

    def __init__(self) -> None:
        self.received = 0
        self.applied = 0
        self._changed = asyncio.Event()

    def receive(self) -> None:
        self.received += 1

    def apply(self, count: int = 1) -> None:
        self.applied += count
        self._notify()

    def reset(self) -> None:
        """The step events received are gone (a lost connection gives them back): none waits."""
        self.applied = self.received
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def caught_up(self, wait: float = STEP_EVENTS_WAIT) -> None:
        """Return once every step event received so far has been applied, or after ``wait``."""
        target = self.received
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while self.applied < target:
                    await self._changed.wait()
                return
        log.debug("step events still unapplied after %gs; applying a terminal message", wait)
