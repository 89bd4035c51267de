"""schemathesis against the gateway's own OpenAPI document: a real uvicorn on 127.0.0.1, the
real PostgreSQL database and RabbitMQ. Every status code, content type and header an
endpoint answers must be the documented one; no request, valid or not, may get a 5xx.

Bounded: a few examples per operation and mode, no per-example deadline, and the whole run
under the per-test timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.generation import GenerationMode

TOKEN = "test-token-123"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 25  # per operation and generation mode


def fuzz(base_url: str, document: dict[str, Any]) -> None:
    """Run every operation of ``document`` against ``base_url``, positive and negative cases;
    the first failure found is raised."""
    schema = schemathesis.openapi.from_dict(document)
    for result in schema.get_all_operations():
        operation = result.ok()
        inputs = operation.query or operation.body
        # Negative cases need something to break: an operation without a query or a body has
        # none (a path parameter is any string, and one with a NUL cannot be sent in a URL).
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if inputs else [])
        for mode in modes:

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                case.call_and_validate(base_url=base_url, headers=AUTH, timeout=10)

            try:
                check()
            except BaseException as exc:
                exc.add_note(f"in {operation.label}, {mode.value} cases")
                raise


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
async def test_the_rest_api_conforms_to_its_openapi(gateway: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        document = (await client.get("/openapi.json")).json()
    # The server runs on this event loop: the synchronous fuzzer runs beside it in a thread.
    async with asyncio.timeout(100):
        await asyncio.to_thread(fuzz, gateway.url, document)
