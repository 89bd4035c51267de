"""``asya call`` and ``asya jobs``: the gateway's REST API, with live progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["ClientError", "call_tool", "list_jobs"]


class ClientError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30, read=None))


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 401:
        raise ClientError("the gateway wants a bearer token", "pass --token (or set ASYA_TOKEN)")
    body: dict[str, Any] = response.json()
    if response.status_code == 404:
        raise ClientError(
            str(body.get("detail")), "asya jobs, or the pipeline file, shows the tool names"
        )
    if response.status_code == 422:
        detail = body.get("detail")
        errors = detail.get("errors") if isinstance(detail, dict) else detail
        raise ClientError(f"invalid arguments: {errors}", "match the tool's input_schema")
    return body


def call_tool(
    url: str,
    token: str | None,
    tool: str,
    arguments: Any,
    on_progress: Callable[[float, str], None],
) -> dict[str, Any]:
    """Start a job and follow it to its end; return the finished job."""
    try:
        with _client(url, token) as client:
            job = _check(client.post("/jobs", json={"tool": tool, "arguments": arguments}))
            if job.get("status") in ("failed", "timed_out", "cancelled"):
                return job
            with client.stream("GET", f"/jobs/{job['id']}/events") as response:
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = json.loads(line[5:])
                    if (
                        data.get("type") in ("progress", "started", "done")
                        and data.get("progress") is not None
                    ):
                        actor = str(data.get("actor", "")).strip()
                        on_progress(float(data["progress"]), data.get("message") or actor)
            return _check(client.get(f"/jobs/{job['id']}"))
    except httpx.ConnectError:
        raise ClientError(
            f"no gateway answers at {url}", "start one with: asya dev <pipeline.yaml>"
        ) from None


def list_jobs(
    url: str, token: str | None, status: str | None, tool: str | None, limit: int
) -> list[dict[str, Any]]:
    params = {k: v for k, v in {"status": status, "tool": tool, "limit": limit}.items() if v}
    try:
        with _client(url, token) as client:
            return list(_check(client.get("/jobs", params=params))["items"])
    except httpx.ConnectError:
        raise ClientError(
            f"no gateway answers at {url}", "start one with: asya dev <pipeline.yaml>"
        ) from None
