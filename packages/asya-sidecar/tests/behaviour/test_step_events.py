"""``started`` and ``progress`` events held for ``ASYA_PROGRESS_INTERVAL``, on both transports:
a step that ends within it publishes only its ``done`` (with the message of its last
progress); a longer one ``started`` and at most one progress per interval, the latest; an
interval of 0 publishes each at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asya_protocol import JOB_HEADER, EventType, StepEvent

HANDLER = "pipeline_handlers:reporting"


async def _events_of(events: Any, mid: str) -> list[StepEvent]:
    """The job's events up to its ``done`` (published after the ack: wait for it, bounded)."""
    async with asyncio.timeout(30):
        while True:
            mine = [e for e in await events() if e.id == mid]
            if any(e.type is EventType.DONE for e in mine):
                return mine
            await asyncio.sleep(0.05)


@pytest.fixture
def reported(bus: Any, make_sidecars: Any, run_sidecars: Any, watch_events: Any) -> Any:
    """Run one job's message with ``payload`` through the reporting handler, with the given
    progress interval; its step events up to ``done``."""

    async def run(payload: dict[str, Any], interval: float) -> list[StepEvent]:
        [sidecar] = make_sidecars([("report", HANDLER)], progress_interval=interval)
        envelope = {
            "id": "r-1",
            "route": {"steps": [bus.queue("report")]},
            "payload": payload,
            "headers": {JOB_HEADER: "job-r-1"},
        }
        async with watch_events(bus) as events, run_sidecars([sidecar]):
            await bus.publish(bus.queue("report"), envelope)
            [done] = await bus.take(bus.happy_end, 1, timeout=30)
            seen = await _events_of(events, "r-1")
        assert done["payload"] == payload
        return seen

    return run


async def test_a_step_that_ends_within_the_interval_reports_only_done(
    bus: Any, reported: Any
) -> None:
    seen = await reported({"parts": 3, "pause": 0}, 30.0)
    assert [e.type for e in seen] == [EventType.DONE]
    assert seen[0].message == "part 3"  # the progress it held
    assert seen[0].destination == bus.happy_end


async def test_a_longer_step_reports_started_then_coalesced_progress(reported: Any) -> None:
    """Ten progress calls 0.05 s apart with an interval of 0.1 s: ``started`` once, then fewer
    progress events than calls, in order, the last message reaching the job either way."""
    seen = await reported({"parts": 10, "pause": 0.05}, 0.1)
    kinds = [e.type for e in seen]
    assert kinds[0] is EventType.STARTED
    assert kinds.count(EventType.STARTED) == 1
    assert kinds[-1] is EventType.DONE
    assert kinds.count(EventType.DONE) == 1
    progress = [e for e in seen if e.type is EventType.PROGRESS]
    assert 1 <= len(progress) < 10
    values = [e.progress for e in progress]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    assert (seen[-1].message or progress[-1].message) == "part 10"


async def test_an_interval_of_zero_publishes_every_event_at_once(reported: Any) -> None:
    seen = await reported({"parts": 4, "pause": 0}, 0.0)
    kinds = [e.type for e in seen]
    assert kinds == [EventType.STARTED, *[EventType.PROGRESS] * 4, EventType.DONE]
    assert [e.message for e in seen[1:5]] == ["part 1", "part 2", "part 3", "part 4"]
    assert seen[-1].message is None
