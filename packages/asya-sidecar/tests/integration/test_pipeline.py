"""The sidecar on real RabbitMQ with real asya-runtime processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from asya_protocol import EventType, child_id, decode_event
from asya_sidecar import Sidecar
from asya_testing import AmqpClient, AmqpNames
from asya_testing.processes import short_socket_path

SEED_STEPS = ["preprocess", "inference", "postprocess"]


def seed_envelope(names: AmqpNames, **extra: Any) -> dict[str, Any]:
    return {
        "route": {"steps": [names.queue(s) for s in SEED_STEPS], "current": 0},
        "payload": {"text": "Hello world"},
        **extra,
    }


async def test_seed_pipeline_end_to_end(
    amqp_url: str, amqp_names: AmqpNames, make_sidecars: Any, run_sidecars: Any
) -> None:
    sidecars = make_sidecars([(s, s) for s in SEED_STEPS])
    async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars(sidecars):
        envelope = seed_envelope(
            amqp_names,
            headers={"traceparent": "00-1-2-01"},
            parent_id="p-0",
            **{"x-keep": {"a": 1}},
        )
        await client.publish(amqp_names.queue("preprocess"), envelope)
        [done] = await client.take(amqp_names.happy_end, 1, timeout=30)
    assert done["payload"] == {"result": "Classified as greeting"}
    assert done["route"] == {"steps": envelope["route"]["steps"], "current": 3}
    assert done["headers"] == {"traceparent": "00-1-2-01"}
    assert done["parent_id"] == "p-0"
    assert done["x-keep"] == {"a": 1}
    assert done["id"]  # assigned by the first sidecar


async def test_seed_fan_out(
    amqp_url: str, amqp_names: AmqpNames, make_sidecars: Any, run_sidecars: Any
) -> None:
    sidecars = make_sidecars([("split", "split"), ("upper", "upper")])
    async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars(sidecars):
        await client.publish(
            amqp_names.queue("split"),
            {
                "id": "parent-1",
                "route": {"steps": [amqp_names.queue("split"), amqp_names.queue("upper")]},
                "payload": {"text": "Hello world"},
            },
        )
        out = await client.take(amqp_names.happy_end, 2, timeout=30)
    assert sorted(o["payload"]["text"] for o in out) == ["HELLO", "WORLD"]
    assert {o["parent_id"] for o in out} == {"parent-1"}
    assert len({o["id"] for o in out}) == 2
    assert all(o["route"]["current"] == 2 for o in out)


async def test_a_redelivered_fan_out_parent_repeats_its_children_ids(
    amqp_url: str, amqp_names: AmqpNames, make_sidecars: Any, run_sidecars: Any
) -> None:
    """A sidecar killed between publishing the children and acking gets the parent again: its
    children must come out under the same ids (duplicates a consumer can drop), not new ones."""
    sidecars = make_sidecars([("split", "split"), ("upper", "upper")])
    split_q, upper_q = amqp_names.queue("split"), amqp_names.queue("upper")
    parent = {
        "id": "parent-twice",
        "route": {"steps": [split_q, upper_q]},
        "payload": {"text": "one two three"},
    }
    other = {**parent, "id": "parent-other"}
    async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars(sidecars):
        for envelope in (parent, parent, other):
            await client.publish(split_q, envelope)
        out = await client.take(amqp_names.happy_end, 9, timeout=30)
        assert await client.drain(amqp_names.happy_end) == []
    twice = [o for o in out if o["parent_id"] == "parent-twice"]
    assert len(twice) == 6
    by_text: dict[str, set[str]] = {}
    for o in twice:
        by_text.setdefault(o["payload"]["text"], set()).add(o["id"])
    # Each child came twice, both times under one id, and the three children differ.
    assert sorted(by_text) == ["ONE", "THREE", "TWO"]
    assert all(len(ids) == 1 for ids in by_text.values())
    assert len(set().union(*by_text.values())) == 3
    assert {o["id"] for o in twice} == {child_id("parent-twice", i) for i in range(3)}
    others = {o["id"] for o in out if o["parent_id"] == "parent-other"}
    assert others == {child_id("parent-other", i) for i in range(3)}


async def test_error_table(
    amqp_url: str, amqp_names: AmqpNames, make_sidecars: Any, run_sidecars: Any
) -> None:
    """parse error, runtime error, timeout, route error: each to error-end, sidecar keeps going."""
    [failing] = make_sidecars([("fails", "fails")])
    [slow] = make_sidecars([("slow", "slow")], runtime_timeout=0.5)
    fails_q, slow_q = amqp_names.queue("fails"), amqp_names.queue("slow")
    async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars([failing, slow]):
        await client.publish(fails_q, b"{this is not json")
        await client.publish(
            fails_q, {"id": "e-1", "route": {"steps": [fails_q]}, "payload": {"k": 1}}
        )
        await client.publish(
            fails_q, {"id": "e-2", "route": {"steps": ["elsewhere", fails_q]}, "payload": 2}
        )
        await client.publish(
            slow_q, {"id": "e-3", "route": {"steps": [slow_q]}, "payload": {"seconds": 3}}
        )
        errors = await client.take(amqp_names.error_end, 4, timeout=30)
        # The timed-out sidecar still works.
        await client.publish(
            slow_q, {"id": "ok-1", "route": {"steps": [slow_q]}, "payload": {"seconds": 0}}
        )
        [fine] = await client.take(amqp_names.happy_end, 1, timeout=30)
    assert fine["id"] == "ok-1"
    by_code = {e["payload"]["error"]: e for e in errors}
    assert set(by_code) == {"parse_error", "handler_error", "route_error", "timeout"}
    assert by_code["parse_error"]["payload"]["original_body"] == "{this is not json"
    assert by_code["parse_error"]["payload"]["step"] == fails_q
    handler = by_code["handler_error"]
    assert handler["id"] == "e-1"
    assert handler["payload"]["original_payload"] == {"k": 1}
    assert "cannot handle" in handler["payload"]["message"]
    assert handler["payload"]["details"]["type"] == "builtins.ValueError"
    assert by_code["route_error"]["id"] == "e-2"
    assert by_code["timeout"]["id"] == "e-3"
    assert by_code["timeout"]["payload"]["step"] == slow_q


async def test_unroutable_next_step_goes_to_error_end(
    amqp_url: str, amqp_names: AmqpNames, make_sidecars: Any, run_sidecars: Any
) -> None:
    [echo] = make_sidecars([("echo", "echo")])
    q = amqp_names.queue("echo")
    async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars([echo]):
        await client.publish(
            q, {"id": "u-1", "route": {"steps": [q, "no-such-step-anywhere"]}, "payload": 1}
        )
        [err] = await client.take(amqp_names.error_end, 1, timeout=30)
    assert err["payload"]["error"] == "unroutable"
    assert err["payload"]["details"] == {"destination": "no-such-step-anywhere"}
    assert err["id"] == "u-1"


async def test_retries_with_backoff_then_success(
    amqp_url: str, amqp_names: AmqpNames, make_sidecars: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    from asya_sidecar import RetryPolicy

    policy = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2, jitter=0.1)
    env = {"TEST_STATE_DIR": str(tmp_path)}
    [flaky] = make_sidecars([("flaky", "flaky")], retry=policy, runtime_env=env)
    q = amqp_names.queue("flaky")
    async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars([flaky]):
        await client.publish(
            q, {"id": "r-ok", "route": {"steps": [q]}, "payload": {"key": "a", "fail_times": 2}}
        )
        await client.publish(
            q, {"id": "r-bad", "route": {"steps": [q]}, "payload": {"key": "b", "fail_times": 5}}
        )
        [done] = await client.take(amqp_names.happy_end, 1, timeout=30)
        [failed] = await client.take(amqp_names.error_end, 1, timeout=30)
    assert done["id"] == "r-ok"
    assert done["payload"] == {"key": "a", "calls": 3}
    assert "asya-attempt" not in done.get("headers", {})
    assert failed["id"] == "r-bad"
    assert failed["payload"]["error"] == "model_busy"
    assert failed["payload"]["attempts"] == 3
    assert flaky.metrics.retries._value.get() == 4  # 2 for a, 2 for b


async def test_concurrency(
    amqp_url: str, amqp_names: AmqpNames, make_sidecars: Any, run_sidecars: Any
) -> None:
    """Four deliveries only finish if four are processed at once (a 4-party barrier)."""
    env = {"TEST_BARRIER": "4", "ASYA_RUNTIME_CONCURRENCY": "4"}
    [sc] = make_sidecars([("b", "barrier")], concurrency=4, runtime_env=env)
    q = amqp_names.queue("b")
    async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars([sc]):
        for i in range(8):
            await client.publish(q, {"route": {"steps": [q]}, "payload": {"i": i}})
        out = await client.take(amqp_names.happy_end, 8, timeout=60)
    assert sorted(o["payload"]["i"] for o in out) == list(range(8))


async def test_step_events(
    amqp_url: str, amqp_names: AmqpNames, make_sidecars: Any, run_sidecars: Any
) -> None:
    import aiormq

    sidecars = make_sidecars([(s, s) for s in SEED_STEPS])
    events_q = amqp_names.queue("events")
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(
            amqp_names.events_exchange, exchange_type="topic", durable=True
        )
        await channel.queue_declare(events_q, durable=True)
        await channel.queue_bind(events_q, amqp_names.events_exchange, routing_key="#")
        async with AmqpClient(amqp_url, amqp_names) as client, run_sidecars(sidecars):
            await client.publish(
                amqp_names.queue("preprocess"), seed_envelope(amqp_names, id="ev-1")
            )
            await client.take(amqp_names.happy_end, 1, timeout=30)
            events = []
            for _ in range(200):
                msg = await channel.basic_get(events_q, no_ack=True)
                if isinstance(msg.delivery, aiormq.spec.Basic.GetEmpty):
                    if len(events) >= 13:
                        break
                    await asyncio.sleep(0.05)
                    continue
                events.append(decode_event(msg.body))
    finally:
        await connection.close()
    kinds = [(e.actor.rsplit("-", 1)[0], e.type) for e in events]
    for step in SEED_STEPS:
        assert (step, EventType.RECEIVED) in kinds
        assert (step, EventType.STARTED) in kinds
        assert (step, EventType.DONE) in kinds
    assert ("inference", EventType.PROGRESS) in kinds
    progress = next(e for e in events if e.type is EventType.PROGRESS)
    assert (progress.progress, progress.message) == (0.5, "thinking")
    last = next(e for e in events if e.type is EventType.DONE and e.current == 2)
    assert last.destination == amqp_names.happy_end
    assert all(e.id == "ev-1" for e in events)
    assert json.loads(json.dumps(list(last.steps))) == [amqp_names.queue(s) for s in SEED_STEPS]


async def test_runtime_never_ready_is_a_clear_error(
    amqp_names: AmqpNames, sidecar_settings: Any
) -> None:
    import pytest

    from asya_sidecar import RuntimeUnavailable

    settings = sidecar_settings(amqp_names.queue("x"), short_socket_path(), runtime_wait=0.3)
    with pytest.raises(RuntimeUnavailable, match=r"no runtime answered on .* within 0\.3s"):
        await Sidecar(settings, lambda: None).run(asyncio.Event())
