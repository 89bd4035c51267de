"""The runtime's request slots, and the truth about them: which handlers are stuck.

A request holds one of ``ASYA_RUNTIME_CONCURRENCY`` slots while its handler runs. A handler that
holds its slot past the runtime timeout (``ASYA_RUNTIME_TIMEOUT``, the sidecar's value) is
**stuck**: a ``def`` handler from its deadline on (a thread cannot be interrupted), an ``async``
one if it has not ended a moment after it was cancelled. While any handler is stuck the runtime is
not ready: ``ping`` and new requests are answered with ``not_ready``, and requests waiting for a
slot are refused. A handler that stays stuck ``ASYA_HANDLER_STUCK_EXIT`` seconds sets
:attr:`Slots.exit_requested`: the server stops and the process exits non-zero, so that the
kubelet restarts the container (the sidecar redelivers what was unacknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

__all__ = ["NotReadyError", "Readiness", "Request", "Slots"]

log = logging.getLogger("asya_runtime")


@dataclass(frozen=True)
class Readiness:
    """What ``ping`` reports: ready, or why not, with the counts behind it."""

    ready: bool
    message: str = "ready"
    slots: int = 0
    busy: int = 0
    stuck: int = 0

    def details(self) -> dict[str, int]:
        return {"slots": self.slots, "busy": self.busy, "stuck": self.stuck}


class NotReadyError(Exception):
    """Raised by :meth:`Slots.acquire` while the runtime is not ready."""

    def __init__(self, readiness: Readiness) -> None:
        super().__init__(readiness.message)
        self.readiness = readiness


@dataclass(eq=False)
class Request:
    """One request holding a slot."""

    connection: int
    sync: bool
    started: float
    stuck_since: float | None = None
    _timers: list[asyncio.TimerHandle] = field(default_factory=list)


class Slots:
    """``capacity`` slots with a deadline per request, and the stuck-handler watch."""

    def __init__(self, capacity: int, *, timeout: float, stuck_exit: float) -> None:
        self.capacity = capacity
        self.timeout = timeout
        self.stuck_exit = stuck_exit
        self.exit_requested = asyncio.Event()
        self.exit_reason = ""
        self._held: set[Request] = set()
        self._changed = asyncio.Event()

    # --- state ------------------------------------------------------------------------------

    def _stuck(self) -> list[Request]:
        return [r for r in self._held if r.stuck_since is not None]

    def readiness(self) -> Readiness:
        stuck = self._stuck()
        busy = len(self._held)
        if not stuck:
            return Readiness(True, slots=self.capacity, busy=busy)
        now = time.monotonic()
        since = min(r.stuck_since or now for r in stuck)
        left = max(0.0, since + self.stuck_exit - now)
        message = (
            f"{len(stuck)} of {self.capacity} slot(s) held by a handler running past "
            f"ASYA_RUNTIME_TIMEOUT ({self.timeout:g}s); the runtime exits in {left:.1f}s "
            "(ASYA_HANDLER_STUCK_EXIT) unless it ends"
        )
        return Readiness(False, message, slots=self.capacity, busy=busy, stuck=len(stuck))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- holding a slot ---------------------------------------------------------------------

    async def acquire(self, connection: int, *, sync: bool) -> Request:
        """A slot for a request; waits while all are busy. Raises :class:`NotReadyError` at
        once, or as soon as it happens while waiting, when the runtime is not ready."""
        while True:
            readiness = self.readiness()
            if not readiness.ready:
                raise NotReadyError(readiness)
            if len(self._held) < self.capacity:
                break
            await self._changed.wait()
        request = Request(connection=connection, sync=sync, started=time.monotonic())
        self._held.add(request)
        if sync:
            loop = asyncio.get_running_loop()
            request._timers.append(loop.call_later(self.timeout, self.mark_stuck, request))
        return request

    def release(self, request: Request, *, ended: bool = True) -> None:
        """The handler ended (or, ``ended=False``, its request was dropped at shutdown): free
        its slot, and report ready again if it was the last one stuck."""
        if request not in self._held:
            return
        self._held.discard(request)
        for timer in request._timers:
            timer.cancel()
        if ended and request.stuck_since is not None:
            ran = time.monotonic() - request.started
            log.warning(
                "connection %d: the stuck handler ended after %.1fs; its slot is free%s",
                request.connection,
                ran,
                "" if self._stuck() else "; the runtime is ready again",
            )
        self._notify()

    def mark_stuck(self, request: Request) -> None:
        """``request`` holds its slot past its deadline: not ready; exit if it stays so."""
        if request not in self._held or request.stuck_since is not None:
            return
        request.stuck_since = time.monotonic()
        ran = request.stuck_since - request.started
        log.error(
            "connection %d: the %s handler still runs %.1fs after it started, past "
            "ASYA_RUNTIME_TIMEOUT (%gs): not ready (new requests are refused); the runtime "
            "exits if it still runs in %gs (ASYA_HANDLER_STUCK_EXIT)",
            request.connection,
            "sync" if request.sync else "cancelled async",
            ran,
            self.timeout,
            self.stuck_exit,
        )
        loop = asyncio.get_running_loop()
        request._timers.append(loop.call_later(self.stuck_exit, self._exit_if_stuck, request))
        self._notify()

    def _exit_if_stuck(self, request: Request) -> None:
        if request not in self._held:  # pragma: no cover - release() cancels this timer
            return
        ran = time.monotonic() - request.started
        self.exit_reason = (
            f"connection {request.connection}: a {'sync' if request.sync else 'async'} handler "
            f"has held its slot for {ran:.1f}s, past ASYA_RUNTIME_TIMEOUT ({self.timeout:g}s) "
            f"and ASYA_HANDLER_STUCK_EXIT ({self.stuck_exit:g}s)"
        )
        self.exit_requested.set()
