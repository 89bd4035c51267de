"""Advisory step events on RabbitMQ, batched (``ASYA_EVENTS_BATCH_WINDOW``): at most one message
per window, a JSON array in order with routing key ``<actor>.batch`` (the first after a quiet
window at the end of the loop's turn, later ones at the window's end); one alone goes as
itself; a window of 0 gathers each turn's; ``off`` publishes each on its own; a transport that
closes publishes what it held first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from asya_protocol import EventType, StepEvent, decode_events, encode_event
from asya_sidecar.transport.amqp import AmqpTransport


def body(i: int) -> bytes:
    return encode_event(StepEvent(type=EventType.DONE, actor="act", time=float(i), id=f"m{i}"))


@asynccontextmanager
async def watched(amqp_bus: Any, window: float | None) -> AsyncIterator[tuple[Any, Callable]]:
    """A connected transport with that window, and a reader of what reached a queue bound to
    its events exchange: ``(routing key, event ids)`` per message."""
    import aiormq

    names = amqp_bus.names
    transport = AmqpTransport(
        amqp_bus.url,
        exchange=names.exchange,
        queue=names.queue("act"),
        terminal=(names.happy_end, names.error_end),
        prefetch=1,
        events_exchange=names.events_exchange,
        events_batch_window=window,
    )
    watch = names.queue("batch-watch")
    connection = await aiormq.connect(amqp_bus.url)
    try:
        channel = await connection.channel()
        await transport.connect()
        await transport.setup()
        await channel.queue_declare(watch, durable=True)
        await channel.queue_bind(watch, names.events_exchange, routing_key="#")

        async def messages(count: int) -> list[tuple[str, list[str]]]:
            got: list[tuple[str, list[str]]] = []
            async with asyncio.timeout(20):
                while len(got) < count:
                    message = await channel.basic_get(watch, no_ack=True)
                    if message.delivery_tag is None:
                        await asyncio.sleep(0.02)
                        continue
                    key = message.delivery.routing_key
                    got.append((key, [e.id or "" for e in decode_events(message.body)]))
            await asyncio.sleep(0.2)  # and nothing more
            extra = await channel.basic_get(watch, no_ack=True)
            assert extra.delivery_tag is None, extra.body
            return got

        yield transport, messages
    finally:
        await transport.close()
        await connection.close()


async def test_the_events_of_one_turn_go_as_one_message_in_order(amqp_bus: Any) -> None:
    actor = amqp_bus.names.queue("act")
    async with watched(amqp_bus, 0.0) as (transport, messages):
        for i in range(3):  # no await suspends between them: one turn of the loop
            await transport.publish_event(f"{actor}.done", body(i))
        assert await messages(1) == [(f"{actor}.batch", ["m0", "m1", "m2"])]
        await transport.publish_event(f"{actor}.done", body(3))  # alone: as itself
        assert await messages(1) == [(f"{actor}.done", ["m3"])]


async def test_a_window_gathers_events_of_several_turns(amqp_bus: Any) -> None:
    """The first event after a quiet window goes at once; the ones that follow within the
    window wait for its end and go together."""
    actor = amqp_bus.names.queue("act")
    async with watched(amqp_bus, 0.5) as (transport, messages):
        for i in range(4):
            await transport.publish_event(f"{actor}.done", body(i))
            await asyncio.sleep(0.02)
        assert await messages(2) == [
            (f"{actor}.done", ["m0"]),
            (f"{actor}.batch", ["m1", "m2", "m3"]),
        ]


async def test_off_publishes_each_event_on_its_own(amqp_bus: Any) -> None:
    actor = amqp_bus.names.queue("act")
    async with watched(amqp_bus, None) as (transport, messages):
        for i in range(3):
            await transport.publish_event(f"{actor}.done", body(i))
        assert await messages(3) == [(f"{actor}.done", [f"m{i}"]) for i in range(3)]


@pytest.mark.parametrize("window", [0.0, 5.0])
async def test_closing_publishes_the_events_held_first(amqp_bus: Any, window: float) -> None:
    actor = amqp_bus.names.queue("act")
    async with watched(amqp_bus, window) as (transport, messages):
        await transport.publish_event(f"{actor}.done", body(0))
        await transport.publish_event(f"{actor}.done", body(1))
        await transport.close()  # before the window ends, or the loop turns
        assert await messages(1) == [(f"{actor}.batch", ["m0", "m1"])]
