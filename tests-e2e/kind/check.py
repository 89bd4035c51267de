"""Call the seed's tool through a gateway with the MCP SDK client; exit 1 unless it answers
"Classified as greeting" (used by tests-e2e/kind/run.sh)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


async def main() -> int:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(
            streamable_http_client(f"{args.url}/mcp", http_client=http)  # type: ignore[arg-type]
        ) as mcp,
    ):

        async def progress(value: float, total: float | None, message: str | None) -> None:
            print(f"progress {value:.0%} {message or ''}", flush=True)  # noqa: T201

        result = await mcp.call_tool(
            "classify_text", {"text": "Hello world"}, progress_callback=progress
        )
    body = json.loads(result.content[0].text)  # type: ignore[union-attr]
    print(json.dumps(body))  # noqa: T201
    return 0 if body.get("result") == {"result": "Classified as greeting"} else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
