"""Long-lived tasks never end silently: an exception is logged, its check fails, and the task is
started again after the shared reconnect :class:`~asya_protocol.Backoff`.

The first run passes its check at once, a restarted one once it has run ``settle`` seconds
(unless the task reports for itself, as a watch does once it has listed). Crashes less than
``settle`` apart count as one run of failures, so a task that crashes at every start fails the
liveness probe after ``unhealthy_after``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from asya_protocol import Backoff

from .health import Check

__all__ = ["SETTLE", "supervise"]

log = logging.getLogger("asya_operator")

SETTLE = 10.0
"""Seconds a restarted task must run before its restart counts as a recovery."""


class Ended(RuntimeError):
    """A task meant to run until cancelled returned."""


async def supervise(
    check: Check,
    run: Callable[[], Awaitable[None]],
    *,
    reports: bool = False,
    settle: float = SETTLE,
    backoff: Backoff | None = None,
) -> NoReturn:
    """Run ``run()`` until cancelled, starting it again whenever it raises or returns."""
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    since: float | None = None
    while True:
        started = loop.time()
        timer = None if reports else loop.call_later(0 if since is None else settle, check.passed)
        try:
            await run()
            error: Exception = Ended(f"{check.name} ended")
        except Exception as exc:  # noqa: BLE001 - logged, reported, restarted below
            error = exc
        finally:
            if timer is not None:
                timer.cancel()
        log.error("task %s failed; restarting it", check.name, exc_info=error)
        if since is None or loop.time() - started >= settle:
            since = check.clock()
            backoff.reset()
        check.failed(error, since=since)
        await backoff.sleep()
