"""SIGTERM at any moment of the sidecar process's start-up (or once it works) ends it
promptly with exit code 0, and no message published before the signal is lost: each ends up
in happy-end or is still on the actor's queue."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from asya_testing import AmqpNames
from asya_testing.amqp import AmqpClient
from asya_testing.processes import START_MOMENTS, sidecar_process, sigterm_at


def envelope(actor: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "route": {"steps": [actor], "current": 0},
        "payload": {"text": "Hello world"},
    }


@pytest.mark.parametrize(
    "moment", [*START_MOMENTS, None], ids=lambda m: "ready" if m is None else f"{m}s"
)
async def test_sigterm_during_start_or_mid_work_loses_nothing(
    amqp_url: str, amqp_names: AmqpNames, runtimes: Any, tmp_path: Path, moment: float | None
) -> None:
    actor = amqp_names.queue("sig")
    _, socket_path = runtimes("preprocess")
    env = {
        "ASYA_RABBITMQ_URL": amqp_url,
        "ASYA_RABBITMQ_EXCHANGE": amqp_names.exchange,
        "ASYA_SOCKET_PATH": socket_path,
        "ASYA_HAPPY_END_QUEUE": amqp_names.happy_end,
        "ASYA_ERROR_END_QUEUE": amqp_names.error_end,
        "ASYA_EVENTS_EXCHANGE": amqp_names.events_exchange,
        "ASYA_CONTROL_EXCHANGE": amqp_names.control_exchange,
        "ASYA_SHUTDOWN_GRACE": "5",
    }
    async with AmqpClient(amqp_url, amqp_names) as amqp:
        await amqp.declare(actor, amqp_names.happy_end, amqp_names.error_end)
        sent = [envelope(actor) for _ in range(3)]
        for body in sent:
            await amqp.publish(actor, body)
        with sidecar_process(actor, env=env, log_dir=tmp_path) as proc:
            if moment is None:  # at work: the first result is out, more are queued behind it
                await amqp.take(amqp_names.happy_end, 1, timeout=30)
                await amqp.publish(actor, (late := envelope(actor)))
                sent.append(late)
                sent.pop(0)  # already taken from happy-end
            await asyncio.to_thread(sigterm_at, proc, moment)
        done = {m["id"] for m in await amqp.drain(amqp_names.happy_end)}
        queued = {m["id"] for m in await amqp.drain(actor)}
        assert await amqp.drain(amqp_names.error_end) == []
    ids = {m["id"] for m in sent}
    assert ids <= done | queued, f"lost: {ids - done - queued}\n{proc.log()}"


@pytest.mark.parametrize("moment", [*START_MOMENTS, 1.0, 3.0], ids=lambda m: f"{m}s")
def test_sigterm_while_waiting_for_the_runtime(
    amqp_url: str, amqp_names: AmqpNames, tmp_path: Path, moment: float
) -> None:
    """No runtime answers (ASYA_RUNTIME_WAIT is a minute): the signal must not wait for it."""
    env = {
        "ASYA_RABBITMQ_URL": amqp_url,
        "ASYA_RABBITMQ_EXCHANGE": amqp_names.exchange,
        "ASYA_SOCKET_PATH": str(tmp_path / "nobody.sock"),
        "ASYA_RUNTIME_WAIT": "60",
    }
    with sidecar_process(amqp_names.queue("alone"), env=env, log_dir=tmp_path) as proc:
        sigterm_at(proc, moment)
