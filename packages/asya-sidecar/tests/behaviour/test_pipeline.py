"""The sidecar's behaviour with real asya-runtime processes, on both transports (``bus``):
the seed pipeline, fan-out, the error table, retries, concurrency, the frame limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from asya_protocol import child_id
from asya_sidecar import RetryPolicy

SEED_STEPS = ["preprocess", "inference", "postprocess"]


async def test_seed_pipeline_end_to_end(bus: Any, make_sidecars: Any, run_sidecars: Any) -> None:
    sidecars = make_sidecars([(s, s) for s in SEED_STEPS])
    async with run_sidecars(sidecars):
        envelope = {
            "route": {"steps": [bus.queue(s) for s in SEED_STEPS], "current": 0},
            "payload": {"text": "Hello world"},
            "headers": {"traceparent": "00-1-2-01"},
            "parent_id": "p-0",
            "x-keep": {"a": 1},
        }
        await bus.publish(bus.queue("preprocess"), envelope)
        [done] = await bus.take(bus.happy_end, 1, timeout=30)
    assert done["payload"] == {"result": "Classified as greeting"}
    assert done["route"] == {"steps": envelope["route"]["steps"], "current": 3}
    assert done["headers"] == {"traceparent": "00-1-2-01"}
    assert done["parent_id"] == "p-0"
    assert done["x-keep"] == {"a": 1}
    assert done["id"]  # assigned by the first sidecar


async def test_seed_fan_out(bus: Any, make_sidecars: Any, run_sidecars: Any) -> None:
    sidecars = make_sidecars([("split", "split"), ("upper", "upper")])
    async with run_sidecars(sidecars):
        await bus.publish(
            bus.queue("split"),
            {
                "id": "parent-1",
                "route": {"steps": [bus.queue("split"), bus.queue("upper")]},
                "payload": {"text": "Hello world"},
            },
        )
        out = await bus.take(bus.happy_end, 2, timeout=30)
    assert sorted(o["payload"]["text"] for o in out) == ["HELLO", "WORLD"]
    assert {o["parent_id"] for o in out} == {"parent-1"}
    assert len({o["id"] for o in out}) == 2
    assert all(o["route"]["current"] == 2 for o in out)


async def test_a_redelivered_fan_out_parent_repeats_its_children_ids(
    bus: Any, make_sidecars: Any, run_sidecars: Any
) -> None:
    """A sidecar killed between publishing the children and acking gets the parent again: its
    children must come out under the same ids (duplicates a consumer can drop), not new ones."""
    sidecars = make_sidecars([("split", "split"), ("upper", "upper")])
    split_q, upper_q = bus.queue("split"), bus.queue("upper")
    parent = {
        "id": "parent-twice",
        "route": {"steps": [split_q, upper_q]},
        "payload": {"text": "one two three"},
    }
    other = {**parent, "id": "parent-other"}
    async with run_sidecars(sidecars):
        for envelope in (parent, parent, other):
            await bus.publish(split_q, envelope)
        out = await bus.take(bus.happy_end, 9, timeout=30)
        assert await bus.drain(bus.happy_end) == []
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


async def test_error_table(bus: Any, make_sidecars: Any, run_sidecars: Any) -> None:
    """parse error, runtime error, timeout, route error: each to error-end, sidecar keeps going."""
    [failing] = make_sidecars([("fails", "fails")])
    [slow] = make_sidecars([("slow", "slow")], runtime_timeout=0.5)
    fails_q, slow_q = bus.queue("fails"), bus.queue("slow")
    async with run_sidecars([failing, slow]):
        await bus.publish(fails_q, b"{this is not json")
        await bus.publish(
            fails_q, {"id": "e-1", "route": {"steps": [fails_q]}, "payload": {"k": 1}}
        )
        await bus.publish(
            fails_q, {"id": "e-2", "route": {"steps": ["elsewhere", fails_q]}, "payload": 2}
        )
        await bus.publish(
            slow_q, {"id": "e-3", "route": {"steps": [slow_q]}, "payload": {"seconds": 3}}
        )
        errors = await bus.take(bus.error_end, 4, timeout=30)
        # The timed-out sidecar still works.
        await bus.publish(
            slow_q, {"id": "ok-1", "route": {"steps": [slow_q]}, "payload": {"seconds": 0}}
        )
        [fine] = await bus.take(bus.happy_end, 1, timeout=30)
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
    bus: Any, make_sidecars: Any, run_sidecars: Any
) -> None:
    [echo] = make_sidecars([("echo", "echo")])
    q = bus.queue("echo")
    async with run_sidecars([echo]):
        await bus.publish(
            q, {"id": "u-1", "route": {"steps": [q, "no-such-step-anywhere"]}, "payload": 1}
        )
        [err] = await bus.take(bus.error_end, 1, timeout=30)
    assert err["payload"]["error"] == "unroutable"
    assert err["payload"]["details"] == {"destination": "no-such-step-anywhere"}
    assert err["id"] == "u-1"


async def test_retries_with_backoff_then_success(
    bus: Any, make_sidecars: Any, run_sidecars: Any, tmp_path: Path
) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2, jitter=0.1)
    env = {"TEST_STATE_DIR": str(tmp_path)}
    [flaky] = make_sidecars([("flaky", "flaky")], retry=policy, runtime_env=env)
    q = bus.queue("flaky")
    async with run_sidecars([flaky]):
        await bus.publish(
            q, {"id": "r-ok", "route": {"steps": [q]}, "payload": {"key": "a", "fail_times": 2}}
        )
        await bus.publish(
            q, {"id": "r-bad", "route": {"steps": [q]}, "payload": {"key": "b", "fail_times": 5}}
        )
        [done] = await bus.take(bus.happy_end, 1, timeout=30)
        [failed] = await bus.take(bus.error_end, 1, timeout=30)
    assert done["id"] == "r-ok"
    assert done["payload"] == {"key": "a", "calls": 3}
    assert "asya-attempt" not in done.get("headers", {})
    assert failed["id"] == "r-bad"
    assert failed["payload"]["error"] == "model_busy"
    assert failed["payload"]["attempts"] == 3
    assert flaky.metrics.retries._value.get() == 4  # 2 for a, 2 for b


async def test_concurrency(bus: Any, make_sidecars: Any, run_sidecars: Any) -> None:
    """Four deliveries only finish if four are processed at once (a 4-party barrier)."""
    env = {"TEST_BARRIER": "4", "ASYA_RUNTIME_CONCURRENCY": "4"}
    [sc] = make_sidecars([("b", "barrier")], concurrency=4, runtime_env=env)
    q = bus.queue("b")
    async with run_sidecars([sc]):
        for i in range(8):
            await bus.publish(q, {"route": {"steps": [q]}, "payload": {"i": i}})
        out = await bus.take(bus.happy_end, 8, timeout=60)
    assert sorted(o["payload"]["i"] for o in out) == list(range(8))


async def test_oversized_payload_goes_to_error_end(
    bus: Any, make_sidecars: Any, run_sidecars: Any
) -> None:
    """A payload over ASYA_MAX_FRAME_SIZE never reaches the runtime: error-end."""
    [sidecar] = make_sidecars([("echo", "echo")], max_frame_size=2048)
    q = bus.queue("echo")
    async with run_sidecars([sidecar]):
        big = {"route": {"steps": [q]}, "payload": {"text": "x" * 5000}}
        await bus.publish(q, big)
        [failed] = await bus.take(bus.error_end, 1, timeout=30)
    assert failed["payload"]["error"] == "frame_too_large"
    assert failed["payload"]["original_payload"] == {"text": "x" * 5000}


async def test_exit_when_idle(bus: Any, make_sidecars: Any) -> None:
    """ASYA_EXIT_WHEN_IDLE: the sidecar works off its queue, then returns by itself."""
    [sidecar] = make_sidecars([("echo", "echo")], exit_when_idle=0.3)
    q = bus.queue("echo")
    await bus.declare(q, bus.happy_end, bus.error_end)
    await bus.publish(q, {"route": {"steps": [q]}, "payload": 1})
    stop = asyncio.Event()
    async with asyncio.timeout(30):
        await sidecar.run(stop)
    assert stop.is_set()
    [done] = await bus.take(bus.happy_end, 1, timeout=5)
    assert done["payload"] == 1
