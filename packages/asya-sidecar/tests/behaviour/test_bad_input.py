"""Inputs that once looped forever or corrupted the wire: each ends once, in error-end, as
valid UTF-8 JSON, and the sidecar keeps going."""

from __future__ import annotations

import json
from typing import Any

from asya_protocol import MAX_ENVELOPE_DEPTH, MAX_JSON_DEPTH, json_depth
from asya_sidecar import Sidecar

DEEP = b"[" * 1000 + b"]" * 1000  # about 2 KB


def nested(depth: int) -> Any:
    """An object (so the echo handler's result is no fan-out) around lists, ``depth`` deep."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"v": value}


async def settle(
    bus: Any,
    good: dict[str, Any],
    sidecars: list[Sidecar],
    errors: int,
) -> list[dict[str, Any]]:
    """Publish a good message after the bad ones (concurrency 1: they are handled in order);
    once it reaches happy-end, everything before it has been settled. Return the ``errors``
    messages of error-end, checking that there is none more and that nothing was requeued."""
    await bus.publish(good["route"]["steps"][0], good)
    [fine] = await bus.take(bus.happy_end, 1, timeout=30)
    assert fine["id"] == good["id"]
    failed = await bus.take(bus.error_end, errors, timeout=30)
    assert await bus.drain(bus.error_end) == []  # exactly once each
    for sidecar in sidecars:
        assert await bus.depth(sidecar.settings.actor) == 0
        assert sidecar.metrics.redeliveries._value.get() == 0  # nothing was requeued
    return failed


async def test_too_deep_payload_and_unknown_field_end_once_as_parse_error(
    bus: Any, make_sidecars: Any, run_sidecars: Any
) -> None:
    [sidecar] = make_sidecars([("echo", "echo")], redelivery_limit=2)
    queue = bus.queue("echo")
    route = b'{"route":{"steps":["' + queue.encode() + b'"]}'
    async with run_sidecars([sidecar]):
        await bus.publish(queue, route + b',"payload":' + DEEP + b"}")
        await bus.publish(queue, route + b',"payload":{},"x-deep":' + DEEP + b"}")
        # Deep enough for the envelope, one level too deep for a payload: the id is kept.
        one_too_deep = json.dumps(nested(MAX_JSON_DEPTH + 1)).encode()
        await bus.publish(queue, route + b',"id":"deep-1","payload":' + one_too_deep + b"}")
        # Exactly at the limit: goes through the runtime and on to happy-end.
        at_limit = {
            "id": "at-limit",
            "route": {"steps": [queue]},
            "payload": nested(MAX_JSON_DEPTH),
        }
        await bus.publish(queue, at_limit)
        [passed] = await bus.take(bus.happy_end, 1, timeout=30)
        good = {"id": "fine", "route": {"steps": [queue]}, "payload": {"a": 1}}
        failed = await settle(bus, good, [sidecar], 3)
    assert passed["id"] == "at-limit"
    assert passed["payload"] == nested(MAX_JSON_DEPTH)
    assert {f["payload"]["error"] for f in failed} == {"parse_error"}
    by_id = {f["id"]: f for f in failed}
    kept = by_id.pop("deep-1")
    assert kept["route"] == {"steps": [queue], "current": 0}
    assert kept["payload"]["original_body"] == one_too_deep.decode()
    assert f"payload nests {MAX_JSON_DEPTH + 1} levels deep" in kept["payload"]["message"]
    for unparsed in by_id.values():
        assert unparsed["payload"]["step"] == queue
        assert "envelope nests 1001 levels deep" in unparsed["payload"]["message"]
        assert f"the limit is {MAX_ENVELOPE_DEPTH}" in unparsed["payload"]["message"]
        assert DEEP.decode() in unparsed["payload"]["original_body"]


async def test_invalid_utf8_in_a_payload_or_a_result_ends_as_valid_json(
    bus: Any, make_sidecars: Any, run_sidecars: Any
) -> None:
    [raw, echo] = make_sidecars([("raw", "raw_result"), ("echo", "echo")], redelivery_limit=2)
    raw_q, echo_q = bus.queue("raw"), bus.queue("echo")
    bad_result = b'{"text": "caf\xe9"}'
    deep_result = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    async with run_sidecars([raw, echo]):
        await bus.publish(
            echo_q,
            b'{"id":"u-1","route":{"steps":["' + echo_q.encode() + b'"]},'
            b'"payload":{"text":"caf\xe9 \xff"}}',
        )
        for n, result in enumerate((bad_result, deep_result)):
            await bus.publish(
                raw_q,
                {
                    "id": f"r-{n}",
                    "route": {"steps": [raw_q, echo_q]},
                    "payload": {"hex": result.hex()},
                },
            )
        good = {
            "id": "fine",
            "route": {"steps": [raw_q, echo_q]},
            "payload": {"hex": b'{"ok": 1}'.hex()},
        }
        # take() parses each body with json.loads, which refuses invalid UTF-8.
        failed = await settle(bus, good, [raw, echo], 3)
    by_id = {f["id"]: f for f in failed}
    assert {"r-0", "r-1"} < set(by_id)
    [in_payload] = [f for f in failed if f["id"] not in {"r-0", "r-1"}]  # unparsed: a new id
    assert in_payload["payload"]["error"] == "parse_error"
    assert "not valid UTF-8" in in_payload["payload"]["message"]
    assert "caf\ufffd \ufffd" in in_payload["payload"]["original_body"]
    for item in (by_id["r-0"], by_id["r-1"]):
        assert item["payload"]["error"] == "parse_error"
        assert item["payload"]["step"] == raw_q
        assert item["route"]["current"] == 0
        assert json_depth(json.dumps(item).encode()) <= MAX_ENVELOPE_DEPTH
    assert "not valid UTF-8" in by_id["r-0"]["payload"]["message"]
    assert f"the limit is {MAX_JSON_DEPTH}" in by_id["r-1"]["payload"]["message"]
