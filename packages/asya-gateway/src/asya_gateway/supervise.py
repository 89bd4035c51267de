"""Supervision of the gateway's long-lived background tasks (the terminal and events consumer,
the timeout sweeper, the LISTEN connection).

Each task runs under its own loop: when it raises (an exception, an ``ExceptionGroup`` of a task
group inside it, a stray ``CancelledError`` that was not ours) the error is logged, the task's
state says why, and it is started again after the shared :class:`asya_protocol.Backoff` (2 s
ceiling, jitter; reset once the task reports :meth:`Health.ok`). A failing task never stops its
siblings: nothing propagates out of a supervised loop but our own cancellation at shutdown.

The states feed ``/readyz`` (every task ``ok``) and ``/healthz`` (503 once a task has been
failing longer than ``unhealthy_after`` seconds, so that Kubernetes restarts the pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from asya_protocol import Backoff

__all__ = ["NO_HEALTH", "Health", "Supervised", "Supervisor", "describe"]

log = logging.getLogger("asya_gateway.supervise")
STARTING = "starting"


@dataclass
class Health:
    """A supervised task's state, which the task itself marks :meth:`ok` when it works."""

    name: str
    clock: Callable[[], float] = time.monotonic
    backoff: Backoff = field(default_factory=Backoff)
    reason: str = STARTING
    """``"ok"``, ``"starting"``, or why it last failed."""
    since: float = 0.0
    """When (``clock``) it last stopped being ok, or was created."""
    restarts: int = 0

    def __post_init__(self) -> None:
        self.since = self.clock()

    @property
    def is_ok(self) -> bool:
        return self.reason == "ok"

    def ok(self) -> None:
        """The task works (connected, swept once): ready, and its backoff starts over."""
        self.reason = "ok"
        self.backoff.reset()

    def failing(self, reason: str) -> None:
        if self.is_ok:
            self.since = self.clock()
        self.reason = reason

    def stuck_for(self) -> float:
        """Seconds since it last worked (0 while it works)."""
        return 0.0 if self.is_ok else self.clock() - self.since


NO_HEALTH = Health("unsupervised")
"""For a task run outside a supervisor (tests): its reports go nowhere."""

Supervised = Callable[[Health], Awaitable[None]]


def describe(exc: BaseException) -> str:
    """One line for an error; the first leaf of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}"[:300] if text else type(exc).__name__


def _restartable(exc: BaseException) -> bool:
    """Whether a task's error is one to restart after (never our own cancellation, nor an
    interpreter exit)."""
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        return False
    if isinstance(exc, BaseExceptionGroup):
        exits, _ = exc.split((KeyboardInterrupt, SystemExit, GeneratorExit))
        if exits is not None:
            return False
    task = asyncio.current_task()
    return task is None or not task.cancelling()  # a CancelledError not ours: restart


class Supervisor:
    """Runs named tasks, each restarted when it fails; see the module's description."""

    def __init__(
        self, *, unhealthy_after: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.unhealthy_after = unhealthy_after
        self.clock = clock
        self._tasks: dict[str, tuple[Supervised, Health]] = {}

    def add(self, name: str, task: Supervised, *, backoff: Backoff | None = None) -> Health:
        health = Health(name, self.clock, backoff or Backoff())
        self._tasks[name] = (task, health)
        return health

    def health(self, name: str) -> Health:
        return self._tasks[name][1]

    def checks(self) -> dict[str, str]:
        """Every task's state: ``"ok"`` or why not."""
        return {name: health.reason for name, (_, health) in self._tasks.items()}

    def stuck(self) -> dict[str, str]:
        """The tasks that have not worked for longer than ``unhealthy_after``, and why."""
        return {
            name: health.reason
            for name, (_, health) in self._tasks.items()
            if health.stuck_for() > self.unhealthy_after
        }

    async def run(self) -> None:
        """Run every task until cancelled. Nothing a task raises gets out of here."""
        async with asyncio.TaskGroup() as tg:
            for name, (task, health) in self._tasks.items():
                tg.create_task(self._keep(task, health), name=name)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        """Run the tasks for the context's duration; cancel them and wait for them at exit."""
        runner = asyncio.create_task(self.run(), name="supervisor")
        try:
            yield self
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _keep(self, task: Supervised, health: Health) -> None:
        while True:
            try:
                await task(health)
                reason = "stopped"  # a long-lived task that returns is started again
            except BaseException as exc:
                if not _restartable(exc):
                    raise
                reason = describe(exc)
                self._log(health, reason, exc)
            health.failing(reason)
            health.restarts += 1
            await asyncio.sleep(health.backoff.next_delay())

    @staticmethod
    def _log(health: Health, reason: str, exc: BaseException) -> None:
        first = health.is_ok or health.reason == STARTING or health.reason != reason
        if first:  # a new failure: in full; the same one again at each retry: one line
            log.warning("%s failed, restarting it: %s", health.name, reason, exc_info=exc)
        else:
            log.info("%s still failing (%d retries): %s", health.name, health.restarts, reason)
