"""The bounds on partial results, without a broker: the buffer (pure) and the stream's
publishing order, coalescing, back-pressure and flush."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from asya_protocol import PartialReply
from asya_sidecar.errors import TransportError
from asya_sidecar.partials import PartialBuffer, PartialStream, dropped_marker, partial_stream


def reply(value: object) -> PartialReply:
    return PartialReply(partial=msgspec.Raw(json.dumps(value).encode()))


def test_buffer_admits_bounds_and_counts_offsets() -> None:
    buffer = PartialBuffer(max_bytes=10)
    assert buffer.admit(b'"abc"') == b'"abc"'
    big = b'"' + b"x" * 20 + b'"'
    assert json.loads(buffer.admit(big)) == {
        "asya_dropped": {"reason": "too_large", "bytes": 22, "limit": 10}
    }
    assert buffer.dropped == 1
    assert buffer.fits(b"x" * 100)  # an empty buffer takes anything admitted
    buffer.add(b'"abcdef"')
    assert buffer.fits(b"12")
    assert not buffer.fits(b"123")
    buffer.add(b"12")
    assert buffer.take() == (0, [b'"abcdef"', b"12"])
    assert (buffer.chunks, buffer.size) == ([], 0)
    buffer.add(b"3")
    assert buffer.take() == (2, [b"3"])
    assert dropped_marker(5, 4) == b'{"asya_dropped":{"reason":"too_large","bytes":5,"limit":4}}'


async def test_chunks_in_one_interval_are_one_event_in_order() -> None:
    published: list[tuple[int, list[object]]] = []
    first = asyncio.Event()

    async def publish(offset: int, chunks: list[msgspec.Raw]) -> None:
        published.append((offset, [json.loads(bytes(c)) for c in chunks]))
        first.set()

    async with partial_stream(publish, max_bytes=1000, interval=60.0, what="t") as stream:
        await stream.add(reply("a"))
        await first.wait()  # the first goes out at once
        for value in ["b", {"c": 1}, [2], None]:
            await stream.add(reply(value))
    # The rest waited for the interval, cut short by the end of the exchange.
    assert published == [(0, ["a"]), (1, ["b", {"c": 1}, [2], None])]


async def test_a_full_buffer_holds_the_reader_back_and_nothing_is_lost() -> None:
    published: list[list[str]] = []
    release, started = asyncio.Event(), asyncio.Event()

    async def publish(offset: int, chunks: list[msgspec.Raw]) -> None:
        published.append([json.loads(bytes(c)) for c in chunks])
        started.set()
        await release.wait()  # a slow broker

    values = [f"{i:04d}" for i in range(12)]  # 6 bytes each as JSON
    async with partial_stream(publish, max_bytes=20, interval=0.0, what="t") as stream:
        adding = asyncio.create_task(_add_all(stream, values))
        await started.wait()
        for _ in range(100):  # let the reader run as far as it can
            await asyncio.sleep(0)
        assert not adding.done()  # held back: the pending chunks are full
        assert stream.buffer.size <= 20
        release.set()
        await adding
    assert [c for event in published for c in event] == values
    assert all(len(event) * 6 <= 20 for event in published)


async def _add_all(stream: PartialStream, values: list[str]) -> None:
    for value in values:
        await stream.add(reply(value))


async def test_a_failed_publish_is_raised_after_the_exchange() -> None:
    failed = asyncio.Event()

    async def publish(offset: int, chunks: list[msgspec.Raw]) -> None:
        failed.set()
        raise TransportError("broker gone")

    async def exchange() -> None:
        async with partial_stream(publish, max_bytes=100, interval=0.0, what="t") as stream:
            await stream.add(reply("a"))
            await failed.wait()
            await asyncio.sleep(0)  # the pump records the failure
            await stream.add(reply("dropped: the step fails anyway"))

    with pytest.raises(TransportError, match="broker gone"):
        await exchange()
