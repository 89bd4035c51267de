"""Partial results reach an MCP client (the official Python SDK) as progress notifications,
in order, before the tool's result: a streaming handler in a real runtime, its sidecar on real
RabbitMQ, the gateway on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from asya_gateway import GatewaySettings, parse_tools
from asya_testing import AmqpNames

from .conftest import TOKEN, serve
from .test_partials import TEXT, stream_actor, stream_runtime

__all__ = ["stream_actor", "stream_runtime"]  # fixtures, shared with the SSE test

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_an_mcp_client_sees_partial_results_in_order_before_the_result(
    gateway_settings: GatewaySettings, amqp_names: AmqpNames, stream_actor: None, mode: str
) -> None:
    tools = parse_tools(
        {"tools": [{"name": "stream_words", "steps": [amqp_names.queue("stream")]}]},
        "partials.yaml",
    )
    notes: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        notes.append((value, total, message))

    async with (
        serve(gateway_settings, tools) as gateway,
        create_mcp_http_client(headers=AUTH) as http,
        Client(
            streamable_http_client(f"{gateway.url}/mcp", http_client=http),  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
        ) as mcp,
    ):
        result = await mcp.call_tool("stream_words", {"text": TEXT}, progress_callback=on_progress)
    assert not result.is_error, result
    assert result.structured_content is not None
    assert result.structured_content["result"] == {"words": 40}
    texts = [m for _, _, m in notes if m and m.startswith("w")]
    assert "".join(texts) == TEXT + " "
    values = [v for v, _, _ in notes]
    assert values == sorted(values)
    assert len(set(values)) == len(values), "progress values must increase"
    assert values[-1] == 1.0
    assert all(v < 1.0 for v in values[:-1])
