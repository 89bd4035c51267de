"""Cancelled jobs: the ids the gateway announced on the control exchange, kept for a while.

A delivery of a cancelled job is not sent to the runtime (see :func:`~.decision.cancelled`); a
request in flight when its job is cancelled is abandoned: :func:`abandon_when` cancels the
call, which closes the request's runtime connection as a timeout does, and the runtime cancels an
``async def`` handler as it sees that (a ``def`` handler's thread runs to its end; its result is
discarded). The set is bounded: at most :data:`MAX_CANCELLED_JOBS` ids, each for
:data:`CANCELLED_JOB_TTL` seconds, the oldest forgotten first.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Final, TypeVar

__all__ = [
    "ABANDONED",
    "CANCELLED_JOB_TTL",
    "MAX_CANCELLED_JOBS",
    "Abandoned",
    "CancelledJobs",
    "Gone",
    "abandon_when",
]

MAX_CANCELLED_JOBS: Final = 10_000
"""Cancelled job ids a sidecar keeps; past it the oldest is forgotten."""
CANCELLED_JOB_TTL: Final = 3600.0
"""Seconds a cancelled job id is kept (a job's later messages arrive within that, or are run)."""

T = TypeVar("T")


class Gone:
    """Set once every job a request belongs to is cancelled; calls back what waits on it
    (:func:`abandon_when`), with no task of its own."""

    def __init__(self) -> None:
        self._set = False
        self._callbacks: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_set(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def discard(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)


class _Watch:
    def __init__(self, pending: set[str]) -> None:
        self.pending = pending
        self.event = Gone()
        if not pending:
            self.event.set()


class CancelledJobs:
    """Job ids cancelled recently, and the requests in flight waiting to hear of one."""

    def __init__(
        self,
        *,
        max_jobs: int = MAX_CANCELLED_JOBS,
        ttl: float = CANCELLED_JOB_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_jobs
        self._ttl = ttl
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()  # oldest first
        self._watches: dict[str, set[_Watch]] = {}

    def __len__(self) -> int:
        self._expire()
        return len(self._expiry)

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, str):
            return False
        expiry = self._expiry.get(job_id)
        return expiry is not None and expiry > self._clock()

    def cancel(self, job_id: str) -> None:
        """Remember ``job_id`` as cancelled and wake the requests that wait for it."""
        self._expiry.pop(job_id, None)
        self._expiry[job_id] = self._clock() + self._ttl
        self._expire()
        while len(self._expiry) > self._max:
            self._expiry.popitem(last=False)
        for watch in self._watches.get(job_id, ()):
            watch.pending.discard(job_id)
            if not watch.pending:
                watch.event.set()

    def _expire(self) -> None:
        now = self._clock()
        while self._expiry:
            job_id, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                return
            del self._expiry[job_id]

    @contextlib.contextmanager
    def watching(self, job_ids: Collection[str]) -> Iterator[Gone]:
        """An event set once every one of ``job_ids`` (not empty) is cancelled, while the block
        runs: already set if they all are."""
        watch = _Watch({j for j in job_ids if j not in self})
        for job_id in watch.pending:
            self._watches.setdefault(job_id, set()).add(watch)
        try:
            yield watch.event
        finally:
            for job_id in set(job_ids):
                watches = self._watches.get(job_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._watches[job_id]


class Abandoned:
    """The call was given up: its job was cancelled while it ran."""

    def __repr__(self) -> str:
        return "ABANDONED"


ABANDONED: Final = Abandoned()


async def abandon_when(gone: Gone, call: Awaitable[T]) -> T | Abandoned:
    """Await ``call``, unless ``gone`` is set first (or already): then ``call`` is cancelled
    and :data:`ABANDONED` returned. A result that comes with ``gone`` set is dropped too.

    The call runs in the caller's task (no task, no waiter of its own): setting ``gone``
    cancels that task, and the cancellation is taken back here, as ``asyncio.timeout`` does."""
    if gone.is_set():
        if inspect.iscoroutine(call):
            call.close()
        return ABANDONED
    task = asyncio.current_task()
    assert task is not None  # noqa: S101 - awaited, so inside a task
    fired = False

    def fire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    gone.on_set(fire)
    try:
        result = await call
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            return ABANDONED
        raise
    finally:
        gone.discard(fire)
    # A cancel that came after the result, before this task resumed, raised above: the result
    # of a cancelled job never gets here.
    return result
