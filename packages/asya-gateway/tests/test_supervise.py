"""The supervisor: a failing task is restarted with backoff and never stops its siblings; its
state feeds /readyz (every task ok) and /healthz (none stuck past ``unhealthy_after``)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from asya_gateway.supervise import Health, Supervisor, describe
from asya_protocol import Backoff


def quick() -> Backoff:
    return Backoff(initial=0.01, maximum=0.05)


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check`` until true, failing after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


async def test_a_failing_task_restarts_with_backoff_and_its_sibling_keeps_running() -> None:
    supervisor = Supervisor(unhealthy_after=60)
    attempts: list[float] = []
    ticks = 0

    async def flaky(health: Health) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 4:
            raise ExceptionGroup("consumer", [ConnectionError("broker gone")])
        health.ok()
        await asyncio.Event().wait()

    async def steady(health: Health) -> None:
        nonlocal ticks
        health.ok()
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    flaky_health = supervisor.add("consumer", flaky, backoff=quick())
    supervisor.add("timeouts", steady, backoff=quick())
    async with supervisor.running():
        await wait_until(lambda: flaky_health.is_ok)
        before = ticks
        await wait_until(lambda: ticks > before)
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.005 for gap in gaps)  # backed off, not a busy loop
    assert flaky_health.restarts == 3
    assert flaky_health.backoff.attempts == 0  # reset once it worked


async def test_readiness_flips_while_failing_and_recovers() -> None:
    supervisor = Supervisor(unhealthy_after=60)
    fail = asyncio.Event()
    fail.set()

    async def task(health: Health) -> None:
        if fail.is_set():
            raise ConnectionError("database unavailable: refused")
        health.ok()
        await asyncio.Event().wait()

    health = supervisor.add("timeouts", task, backoff=quick())
    assert supervisor.checks() == {"timeouts": "starting"}
    async with supervisor.running():
        await wait_until(lambda: health.restarts > 0)
        assert supervisor.checks() == {"timeouts": "ConnectionError: database unavailable: refused"}
        fail.clear()
        await wait_until(lambda: health.is_ok)
        assert supervisor.checks() == {"timeouts": "ok"}


async def test_a_task_stuck_past_unhealthy_after_is_reported() -> None:
    now = [100.0]
    supervisor = Supervisor(unhealthy_after=120, clock=lambda: now[0])

    async def never(health: Health) -> None:
        raise OSError("connection refused")

    supervisor.add("consumer", never, backoff=quick())
    async with supervisor.running():
        await wait_until(lambda: supervisor.health("consumer").restarts > 1)
        now[0] += 119
        assert supervisor.stuck() == {}
        now[0] += 2
        assert supervisor.stuck() == {"consumer": "OSError: connection refused"}


async def test_a_stray_cancelled_error_restarts_but_shutdown_cancels() -> None:
    supervisor = Supervisor(unhealthy_after=60)
    runs = 0

    async def cancelled_inside(health: Health) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError  # e.g. a library's future cancelled under us
        health.ok()
        await asyncio.Event().wait()

    health = supervisor.add("notifications", cancelled_inside, backoff=quick())
    async with supervisor.running():
        await wait_until(lambda: health.is_ok)
    assert runs == 2  # and leaving the context did not hang: our cancellation ends it


async def test_a_task_that_returns_is_started_again() -> None:
    runs: list[float] = []
    supervisor = Supervisor(unhealthy_after=60)
    health = supervisor.add(
        "x", lambda _health: asyncio.sleep(0, runs.append(0.0)), backoff=quick()
    )
    async with supervisor.running():
        await wait_until(lambda: len(runs) >= 3)
    assert health.reason == "stopped"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (ValueError("bad\nsecond line"), "ValueError: bad"),
        (ExceptionGroup("g", [OSError("refused")]), "OSError: refused"),
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_describe(error: BaseException, text: str) -> None:
    assert describe(error) == text
