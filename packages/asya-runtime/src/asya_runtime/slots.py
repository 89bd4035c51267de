"""The runtime's request slots, and the truth about them: which handlers are stuck.

A request holds one of ``ASYA_RUNTIME_CONCURRENCY`` slots while its handler runs. A handler that
holds its slot past the runtime timeout (``ASYA_RUNTIME_TIMEOUT``, the sidecar's value) is
**stuck**: a ``def`` handler from its deadline on (a thread cannot be interrupted), an ``async``
one if it has not ended a moment after it was cancelled. While any handler is stuck the runtime is
not ready: ``ping`` and new requests are answered with ``not_ready``, and requests waiting for a
slot are refused. A handler that stays stuck ``ASYA_HANDLER_STUCK_EXIT`` seconds sets
:attr:`Slots.exit_requested`: the server stops and the process exits non-zero, so that the
kubelet restarts the container (the sidecar redelivers what was unacknowledged).

An ``async`` request takes its slot on the loop (:meth:`Slots.acquire`); a ``def`` request takes
its slot in its connection's thread (:meth:`Slots.acquire_blocking`), and the loop's
:meth:`Slots.watch_deadlines` marks it stuck at its deadline. A lock guards the state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .threads import call_soon_threadsafe_unless_closed

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


@dataclass(eq=False, slots=True)
class Request:
    """One request holding a slot."""

    connection: int
    sync: bool
    started: float
    stuck_since: float | None = None
    _timers: list[asyncio.TimerHandle] | None = None


class Slots:
    """``capacity`` slots with a deadline per request, and the stuck-handler watch.

    Made on the loop that serves the runtime (its timers and :attr:`exit_requested` live there).
    """

    def __init__(self, capacity: int, *, timeout: float, stuck_exit: float) -> None:
        self.capacity = capacity
        self.timeout = timeout
        self.stuck_exit = stuck_exit
        self.exit_requested = asyncio.Event()
        self.exit_reason = ""
        self._held: set[Request] = set()
        self._stuck_count = 0
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)  # wakes requests waiting in a thread
        self._changed = asyncio.Event()  # wakes requests waiting on the loop
        self._waiting_in_threads = 0
        self._waiting_on_loop = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- state ------------------------------------------------------------------------------

    def _stuck(self) -> list[Request]:
        return [r for r in self._held if r.stuck_since is not None]

    def readiness(self) -> Readiness:
        with self._lock:
            return self._readiness()

    def _readiness(self) -> Readiness:
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
        """Wake every request waiting for a slot (called with the lock held)."""
        if self._waiting_in_threads:
            self._freed.notify_all()
        if not self._waiting_on_loop or self._loop is None:
            return
        self._call_on_loop(self._notify_loop)

    def _notify_loop(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _take(self, connection: int, *, sync: bool) -> Request | None:
        """A slot now, None when all are busy; :class:`NotReadyError` when not ready. (Every
        request passes here: it only counts.)"""
        if self._stuck_count:
            raise NotReadyError(self._readiness())
        if len(self._held) >= self.capacity:
            return None
        request = Request(connection, sync, time.monotonic())
        self._held.add(request)
        return request

    # --- holding a slot ---------------------------------------------------------------------

    async def acquire(self, connection: int) -> Request:
        """A slot for an ``async`` request, on the loop; waits while all are busy. Raises
        :class:`NotReadyError` at once, or as soon as it happens while waiting, when the
        runtime is not ready. The handler's deadline is its own (:func:`run_watched`)."""
        self._loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                request = self._take(connection, sync=False)
                if request is not None:
                    return request
                changed = self._changed
                self._waiting_on_loop += 1
            try:
                await changed.wait()
            finally:
                with self._lock:
                    self._waiting_on_loop -= 1

    def acquire_blocking(self, connection: int) -> Request:
        """A slot for a ``def`` request, in its connection's thread; as :meth:`acquire`. Its
        deadline is watched by :meth:`watch_deadlines` on the loop."""
        with self._lock:
            while True:
                request = self._take(connection, sync=True)
                if request is not None:
                    return request
                self._waiting_in_threads += 1
                try:
                    self._freed.wait()
                finally:
                    self._waiting_in_threads -= 1

    async def watch_deadlines(self) -> None:
        """Mark each ``def`` request stuck at its deadline, for ever (cancel it to stop).

        All deadlines are ``started + timeout``: a request that starts later ends later, so
        sleeping until the oldest running request's deadline (or a whole timeout when none
        runs) never oversleeps one.
        """
        self._loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            with self._lock:
                running = [r for r in self._held if r.sync and r.stuck_since is None]
            due = [r for r in running if r.started + self.timeout <= now]
            for request in due:
                self.mark_stuck(request)
            if due:
                continue
            oldest = min((r.started for r in running), default=now)
            await asyncio.sleep(oldest + self.timeout - now)

    def release(self, request: Request, *, ended: bool = True) -> None:
        """The handler ended (or, ``ended=False``, its request was dropped at shutdown): free
        its slot, and report ready again if it was the last one stuck. From any thread."""
        with self._lock:
            if request not in self._held:
                return
            self._held.discard(request)
            timers, request._timers = request._timers, None
            if request.stuck_since is not None:
                self._stuck_count -= 1
            still_stuck = self._stuck_count > 0
            self._notify()
        if timers:
            self._call_on_loop(_cancel_all, timers)
        if ended and request.stuck_since is not None:
            ran = time.monotonic() - request.started
            log.warning(
                "connection %d: the stuck handler ended after %.1fs; its slot is free%s",
                request.connection,
                ran,
                "" if still_stuck else "; the runtime is ready again",
            )

    def _call_on_loop(self, callback: Callable[..., object], *args: object) -> None:
        """``callback`` on the serving loop: now if this is it, else soon; never once the loop
        is closed (a ``def`` handler may end after its server: no timer or waiter is left)."""
        loop = self._loop
        if loop is None or asyncio._get_running_loop() is loop:
            callback(*args)
        else:
            call_soon_threadsafe_unless_closed(loop, callback, *args)

    def mark_stuck(self, request: Request) -> None:
        """``request`` holds its slot past its deadline: not ready; exit if it stays so. On
        the loop."""
        with self._lock:
            if request not in self._held or request.stuck_since is not None:
                return
            request.stuck_since = time.monotonic()
            self._stuck_count += 1
            self._notify()
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
        timer = asyncio.get_running_loop().call_later(self.stuck_exit, self._exit_if_stuck, request)
        with self._lock:
            held = request in self._held
            if held:
                request._timers = [*(request._timers or ()), timer]
        if not held:  # released meanwhile, by its thread
            timer.cancel()

    def _exit_if_stuck(self, request: Request) -> None:
        with self._lock:
            held = request in self._held
        if not held:  # released meanwhile, by a thread; its timer's cancel is on its way
            return
        ran = time.monotonic() - request.started
        self.exit_reason = (
            f"connection {request.connection}: a {'sync' if request.sync else 'async'} handler "
            f"has held its slot for {ran:.1f}s, past ASYA_RUNTIME_TIMEOUT ({self.timeout:g}s) "
            f"and ASYA_HANDLER_STUCK_EXIT ({self.stuck_exit:g}s)"
        )
        self.exit_requested.set()


def _cancel_all(timers: list[asyncio.TimerHandle]) -> None:
    for timer in timers:
        timer.cancel()
