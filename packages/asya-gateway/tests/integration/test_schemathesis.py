"""schemathesis against the gateway's own OpenAPI document: a real uvicorn on 127.0.0.1, the
real PostgreSQL database and RabbitMQ. Every status code, content type and header an
endpoint answers must be the documented one, in the phases schemathesis' own runner has
(examples, coverage: boundary and invalid values, wrong methods; fuzzing, valid and invalid
data); no request may get a 5xx.

(Its pytest integration, ``schemathesis.pytest.from_fixture``, fails on our pytest: ``'Function'
object has no attribute '_nodeid'``; each operation's test is built here as that integration
builds it, with ``create_test``.)

Bounded: a few examples per operation, no per-example deadline, every call with a timeout,
and the whole run under the per-test timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)

TOKEN = "test-token-123"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 25  # fuzzed per operation (the coverage phase adds its own)
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def call(case: Any) -> None:
    case.call_and_validate(headers=AUTH, timeout=10)


def fuzz(base_url: str, document: dict[str, Any]) -> None:
    """Run every operation of ``document`` against ``base_url``; the first failure found is
    raised."""
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=base_url)
    for result in schema.get_all_operations():
        operation = result.ok()
        test = create_test(
            operation=operation,
            test_func=call,
            config=HypothesisTestConfig(
                project=schema.config,
                modes=list(HypothesisTestMode),
                settings=SETTINGS,
                seed=0,
            ),
        )
        try:
            test()
        except BaseException as exc:
            exc.add_note(f"in {operation.label}")
            raise


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
async def test_the_rest_api_conforms_to_its_openapi(gateway: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        document = (await client.get("/openapi.json")).json()
    # The server runs on this event loop: the synchronous fuzzer runs beside it in a thread.
    async with asyncio.timeout(100):
        await asyncio.to_thread(fuzz, gateway.url, document)
