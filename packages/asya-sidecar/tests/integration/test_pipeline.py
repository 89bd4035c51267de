"""Step events on real RabbitMQ (the events exchange), and a sidecar whose runtime never
answers. The behaviour suite on both transports is in behaviour/."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from asya_protocol import JOB_HEADER, EventScope, EventType, StepEvent, decode_events
from asya_sidecar import Sidecar
from asya_testing.processes import short_socket_path

SEED_STEPS = ["preprocess", "inference", "postprocess"]


async def _collect(channel: Any, queue: str, done: Any) -> list[StepEvent]:
    """The events on ``queue`` until ``done(events)`` holds and the queue has been empty for
    0.3 s (bounded: 30 s)."""
    import aiormq

    events: list[StepEvent] = []
    quiet = 0
    async with asyncio.timeout(30):
        while not (done(events) and quiet >= 6):
            msg = await channel.basic_get(queue, no_ack=True)
            if isinstance(msg.delivery, aiormq.spec.Basic.GetEmpty):
                quiet += 1
                await asyncio.sleep(0.05)
                continue
            quiet = 0
            events.extend(decode_events(msg.body))
    return events


@pytest.mark.parametrize("scope", [EventScope.ALL, EventScope.JOBS])
async def test_step_events(
    amqp_bus: Any, runtimes: Any, run_sidecars: Any, scope: EventScope
) -> None:
    """``all`` with ``ASYA_PROGRESS_INTERVAL=0``: every message gets received, started,
    progress and done events. ``jobs`` (the default) with steps that end within the interval: a
    message without the job header gets none, a job's message one ``done`` per step, the
    inference step's carrying the message of the progress it held."""
    import aiormq

    amqp_url, amqp_names = amqp_bus.url, amqp_bus.names
    every = scope is EventScope.ALL
    sidecars = [
        amqp_bus.sidecar(
            amqp_names.queue(s),
            runtimes(s)[1],
            step_events=scope,
            progress_interval=0.0 if every else 30.0,
        )
        for s in SEED_STEPS
    ]
    events_q = amqp_names.queue("events")
    steps = [amqp_names.queue(s) for s in SEED_STEPS]
    job = {JOB_HEADER: "job-1"}
    expected = 10 if every else 3
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(
            amqp_names.events_exchange, exchange_type="topic", durable=True
        )
        await channel.queue_declare(events_q, durable=True)
        await channel.queue_bind(events_q, amqp_names.events_exchange, routing_key="#")
        async with run_sidecars(sidecars):
            for mid, headers in (("plain-1", {}), ("ev-1", job)):
                envelope = {
                    "id": mid,
                    "route": {"steps": steps},
                    "headers": headers,
                    "payload": {"text": "Hello world"},
                }
                await amqp_bus.publish(steps[0], envelope)
                await amqp_bus.take(amqp_names.happy_end, 1, timeout=30)
            events = await _collect(
                channel, events_q, lambda seen: sum(e.id == "ev-1" for e in seen) >= expected
            )
    finally:
        await connection.close()
    plain = [e for e in events if e.id == "plain-1"]
    events = [e for e in events if e.id == "ev-1"]
    assert len(events) == expected
    assert len(plain) == (expected if every else 0)
    kinds = [(e.actor.rsplit("-", 1)[0], e.type) for e in events]
    for step in SEED_STEPS:
        assert ((step, EventType.RECEIVED) in kinds) is every
        assert ((step, EventType.STARTED) in kinds) is every
        assert (step, EventType.DONE) in kinds
    assert (("inference", EventType.PROGRESS) in kinds) is every
    inference_done = next(
        e for e in events if e.type is EventType.DONE and e.actor.startswith("inference")
    )
    if every:
        progress = next(e for e in events if e.type is EventType.PROGRESS)
        assert (progress.progress, progress.message) == (0.5, "thinking")
        assert inference_done.message is None
    else:
        assert inference_done.message == "thinking"
    last = next(e for e in events if e.type is EventType.DONE and e.current == 2)
    assert last.destination == amqp_names.happy_end
    assert all(e.headers == job for e in events)
    assert json.loads(json.dumps(list(last.steps))) == [amqp_names.queue(s) for s in SEED_STEPS]


async def test_runtime_never_ready_is_a_clear_error(amqp_bus: Any, sidecar_settings: Any) -> None:
    from asya_sidecar import RuntimeUnavailable

    settings = sidecar_settings(amqp_bus.queue("x"), short_socket_path(), runtime_wait=0.3)
    with pytest.raises(RuntimeUnavailable, match=r"no runtime answered on .* within 0\.3s"):
        await Sidecar(settings, lambda: None).run(asyncio.Event())


async def test_a_fan_outs_done_event_is_persistent_and_confirmed(
    amqp_bus: Any, runtimes: Any, run_sidecars: Any
) -> None:
    """The done event of a fan-out names the children a job waits for: it is published
    persistent on the confirmed channel (before the input's ack), the others stay transient."""
    import aiormq

    names = amqp_bus.names
    split, upper = names.queue("split"), names.queue("upper")
    sidecars = [amqp_bus.sidecar(split, runtimes("split")[1], progress_interval=0.0)]
    sidecars.append(amqp_bus.sidecar(upper, runtimes("upper")[1], progress_interval=0.0))
    events_q = names.queue("fan-events")
    connection = await aiormq.connect(amqp_bus.url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(names.events_exchange, exchange_type="topic", durable=True)
        await channel.queue_declare(events_q, durable=True)
        await channel.queue_bind(events_q, names.events_exchange, routing_key="#")
        async with run_sidecars(sidecars):
            envelope = {
                "id": "fan-1",
                "route": {"steps": [split, upper]},
                "headers": {JOB_HEADER: "job-fan"},
                "payload": {"text": "a b"},
            }
            await amqp_bus.publish(split, envelope)
            await amqp_bus.take(names.happy_end, 2, timeout=30)
            modes: dict[tuple[str, str], int | None] = {}
            for _ in range(200):
                msg = await channel.basic_get(events_q, no_ack=True)
                if isinstance(msg.delivery, aiormq.spec.Basic.GetEmpty):
                    if (split, "done") in modes and (upper, "done") in modes:
                        break
                    await asyncio.sleep(0.05)
                    continue
                for event in decode_events(msg.body):
                    modes[(event.actor, event.type.value)] = msg.header.properties.delivery_mode
    finally:
        await connection.close()
    assert modes[(split, "done")] == 2  # persistent
    assert modes[(split, "started")] != 2
    assert modes[(upper, "done")] != 2  # not a fan-out: advisory as before
