"""The work queue: keyed, de-duplicated, never one key on two workers, requeue after a delay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from asya_operator.metrics import OperatorMetrics
from asya_operator.workqueue import WorkQueue

Handler = Callable[[str, str], Awaitable[float | None]]


@pytest.fixture
async def running() -> AsyncIterator[Callable[[WorkQueue], None]]:
    """Run queues for the test's length; each is stopped (its workers cancelled) at the end."""
    tasks: list[asyncio.Task[None]] = []

    def start(queue: WorkQueue) -> None:
        tasks.append(asyncio.create_task(queue.run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_key_queued_many_times_runs_once(running: Callable[[WorkQueue], None]) -> None:
    seen: list[tuple[str, str]] = []

    async def handle(namespace: str, name: str) -> None:
        seen.append((namespace, name))

    queue = WorkQueue(handle, workers=2)
    for _ in range(5):
        queue.add("ns", "a")
    queue.add("ns", "b")
    running(queue)
    await asyncio.wait_for(queue.idle.wait(), 5)
    assert sorted(seen) == [("ns", "a"), ("ns", "b")]


async def test_a_key_added_while_running_runs_once_more_never_twice_at_once(
    running: Callable[[WorkQueue], None],
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    active = 0
    most = 0
    runs = 0

    async def handle(namespace: str, name: str) -> None:
        nonlocal active, most, runs
        active += 1
        most = max(most, active)
        runs += 1
        started.set()
        await release.wait()
        active -= 1

    queue = WorkQueue(handle, workers=4)
    queue.add("ns", "a")
    running(queue)
    await asyncio.wait_for(started.wait(), 5)
    for _ in range(3):  # a burst of events while the first reconcile runs
        queue.add("ns", "a")
    assert not queue.idle.is_set()
    release.set()
    await asyncio.wait_for(queue.idle.wait(), 5)
    assert (runs, most) == (2, 1)


async def test_a_returned_delay_requeues_and_an_error_is_retried(
    running: Callable[[WorkQueue], None],
) -> None:
    calls: list[str] = []
    done = asyncio.Event()

    async def handle(namespace: str, name: str) -> float | None:
        calls.append(name)
        if len(calls) == 1:
            return 0.01  # a temporary failure: run again soon
        if len(calls) == 2:
            raise RuntimeError("boom")  # logged, retried after ERROR_DELAY
        done.set()
        return None

    queue = WorkQueue(handle, workers=1)
    running(queue)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("asya_operator.workqueue.ERROR_DELAY", 0.01)
        queue.add("ns", "a")
        await asyncio.wait_for(done.wait(), 5)
    assert calls == ["a", "a", "a"]


async def test_a_delay_is_dropped_when_the_queue_stops() -> None:
    async def handle(namespace: str, name: str) -> float:
        return 3600.0

    queue = WorkQueue(handle, workers=1)
    task = asyncio.create_task(queue.run())
    queue.add("ns", "a")
    await asyncio.wait_for(queue.idle.wait(), 5)
    task.cancel()  # the hour-long requeue timer is cancelled with the workers
    await asyncio.gather(task, return_exceptions=True)
    queue.add_after(("ns", "a"), 1.0)  # not running: nothing to schedule it on


async def test_reconciles_are_counted_timed_and_errors_named(
    running: Callable[[WorkQueue], None],
) -> None:
    metrics = OperatorMetrics()
    retried: list[tuple[tuple[str, str], str]] = []
    done = asyncio.Event()
    calls = 0

    async def handle(namespace: str, name: str) -> float | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LookupError("gone")
        done.set()
        return None

    def on_error(key: tuple[str, str], exc: Exception) -> float:
        retried.append((key, type(exc).__name__))
        return 0.01

    queue = WorkQueue(handle, workers=1, metrics=metrics, on_error=on_error)
    running(queue)
    queue.add("ns", "a")
    await asyncio.wait_for(done.wait(), 5)
    assert retried == [(("ns", "a"), "LookupError")]
    value = metrics.registry.get_sample_value
    assert value("asya_operator_reconciles_total", {"result": "ok"}) == 1
    assert value("asya_operator_reconciles_total", {"result": "error"}) == 1
    assert value("asya_operator_reconcile_errors_total", {"error": "LookupError"}) == 1
    assert value("asya_operator_reconcile_duration_seconds_count") == 2
    assert value("asya_operator_workqueue_depth") == 0
