"""SIGTERM at any moment of the gateway process's start-up, or once it serves, ends it
promptly with exit code 0 (uvicorn's own handling covers the serving part)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from asya_testing import AmqpNames
from asya_testing.processes import START_MOMENTS, free_port, managed_process, sigterm_at, wait_until

from .conftest import TOKEN, tools_doc


def healthy(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    return False


@pytest.mark.parametrize(
    "moment", [*START_MOMENTS, 1.0, None], ids=lambda m: "ready" if m is None else f"{m}s"
)
def test_sigterm_during_start_or_once_serving(
    amqp_url: str, amqp_names: AmqpNames, database: str, tmp_path: Path, moment: float | None
) -> None:
    tools = tmp_path / "tools.yaml"
    tools.write_text(json.dumps(tools_doc(amqp_names)))
    port = free_port()
    env = {
        **os.environ,
        "ASYA_DATABASE_URL": database,
        "ASYA_RABBITMQ_URL": amqp_url,
        "ASYA_RABBITMQ_EXCHANGE": amqp_names.exchange,
        "ASYA_HAPPY_END_QUEUE": amqp_names.happy_end,
        "ASYA_ERROR_END_QUEUE": amqp_names.error_end,
        "ASYA_EVENTS_EXCHANGE": amqp_names.events_exchange,
        "ASYA_GATEWAY_EVENTS_QUEUE": amqp_names.queue("gateway-events"),
        "ASYA_GATEWAY_TOOLS": str(tools),
        "ASYA_GATEWAY_TOKENS": TOKEN,
        "ASYA_GATEWAY_PORT": str(port),
    }
    argv = [sys.executable, "-m", "asya_gateway"]
    with managed_process(argv, env, log_dir=tmp_path, name="gateway") as proc:
        if moment is None:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: not proc.alive() or healthy(url), timeout=60, what="healthz")
        sigterm_at(proc, moment)
