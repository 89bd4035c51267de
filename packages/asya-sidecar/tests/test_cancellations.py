"""The cancelled-job set (bounded, expiring), its watches, abandoning a call, and the decision."""

from __future__ import annotations

import asyncio
import json

import pytest

from asya_protocol import JOB_HEADER
from asya_sidecar.cancellations import (
    ABANDONED,
    CANCELLED_JOB_TTL,
    MAX_CANCELLED_JOBS,
    CancelledJobs,
    Gone,
    abandon_when,
)
from asya_sidecar.decision import Outcome, Process, RoutingContext, cancelled, inspect
from asya_sidecar.settings import RetryPolicy

CTX = RoutingContext(
    actor="a", happy_end="h", error_end="e", retry=RetryPolicy(), redelivery_limit=3
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limits() -> None:
    assert MAX_CANCELLED_JOBS == 10_000
    assert CANCELLED_JOB_TTL == 3600.0


def test_a_cancelled_job_is_kept_for_its_ttl() -> None:
    clock = Clock()
    jobs = CancelledJobs(ttl=10.0, clock=clock)
    jobs.cancel("j")
    assert "j" in jobs
    assert "other" not in jobs
    assert None not in jobs
    clock.now += 9.9
    assert "j" in jobs
    clock.now += 0.2
    assert "j" not in jobs
    assert len(jobs) == 0


def test_past_the_limit_the_oldest_is_forgotten() -> None:
    jobs = CancelledJobs(max_jobs=3)
    for j in "abcd":
        jobs.cancel(j)
    assert [j in jobs for j in "abcd"] == [False, True, True, True]
    jobs.cancel("b")  # cancelled again: the newest now
    jobs.cancel("e")
    assert [j in jobs for j in "bcde"] == [True, False, True, True]
    assert len(jobs) == 3


async def test_a_watch_is_set_once_every_job_is_cancelled() -> None:
    jobs = CancelledJobs()
    with jobs.watching({"a", "b"}) as gone:
        jobs.cancel("a")
        assert not gone.is_set()
        jobs.cancel("b")
        assert gone.is_set()
    assert jobs._watches == {}
    with jobs.watching({"a"}) as already:
        assert already.is_set()


async def test_abandon_when_returns_the_result_or_abandons() -> None:
    never = Gone()
    assert await abandon_when(never, asyncio.sleep(0, "r")) == "r"

    cancelled_inside = asyncio.Event()

    async def forever() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled_inside.set()
        return "never"

    gone = Gone()
    asyncio.get_running_loop().call_later(0.01, gone.set)
    assert await abandon_when(gone, forever()) is ABANDONED
    assert cancelled_inside.is_set()
    assert await abandon_when(gone, asyncio.sleep(0, "late")) is ABANDONED
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_abandon_when_leaves_an_outer_cancellation_alone() -> None:
    """The caller's own cancellation (shutdown) is not mistaken for an abandon: it goes on."""
    gone = Gone()

    async def caller() -> object:
        return await abandon_when(gone, asyncio.Event().wait())

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)
    task.cancel()
    gone.set()  # both: the outer cancellation wins
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_result_that_comes_with_the_cancel_is_dropped() -> None:
    """The call's result is ready but the task has not resumed yet when the job is cancelled:
    the result is dropped (abandoned), nothing leaks as a cancellation."""
    gone = Gone()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def caller() -> object:
        return await abandon_when(gone, ready)

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)
    ready.set_result("r")
    gone.set()
    assert await task is ABANDONED


def test_a_cancelled_message_is_acked_and_publishes_nothing() -> None:
    body = {"id": "m", "route": {"steps": ["a", "b"]}, "payload": 1, "headers": {JOB_HEADER: "j"}}
    step = inspect(json.dumps(body).encode(), CTX)
    assert isinstance(step, Process)
    assert step.job_id == "j"
    decision = cancelled(step)
    assert (decision.outcome, decision.publish, decision.ack) == (Outcome.CANCELLED, (), True)
    assert decision.reason == "job j cancelled"
    plain = inspect(json.dumps({"route": {"steps": ["a"]}, "payload": 1}).encode(), CTX)
    assert isinstance(plain, Process)
    assert plain.job_id is None
