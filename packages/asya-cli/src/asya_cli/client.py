"""``asya call``, ``asya jobs`` and ``asya cancel``: the gateway's REST API, with live progress.

One place, :func:`_answer`, turns an HTTP answer into its JSON body or a named error
(:class:`NotFound`, :class:`Conflict`, or a :class:`ClientError` saying what came back when it is
not the gateway's JSON); everything above catches names, never numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

from .errors import ClientError, Conflict, Interrupted, NotFound

__all__ = ["call_tool", "cancel_job", "list_jobs"]

FINISHED = ("succeeded", "failed", "timed_out", "cancelled")
SHOWN_BYTES = 200
"""How much of an answer that is not JSON the error shows."""


@contextmanager
def _client(url: str, token: str | None) -> Iterator[httpx.Client]:
    """A client for the gateway; a connection that fails becomes a :class:`ClientError`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(
            base_url=url, headers=headers, timeout=httpx.Timeout(30, read=None)
        ) as client:
            yield client
    except httpx.ConnectError:
        raise ClientError(
            f"no gateway answers at {url}", "start one with: asya dev <pipeline.yaml>"
        ) from None
    except httpx.HTTPError as exc:
        raise ClientError(
            f"the connection to the gateway at {url} failed: {type(exc).__name__}: {exc}",
            "is the gateway still running? see its log",
        ) from None


def not_json(response: httpx.Response) -> ClientError:
    """The error for an answer that is not the gateway's JSON (a proxy's HTML page, text)."""
    kind = response.headers.get("content-type") or "no content type"
    shown = response.content[:SHOWN_BYTES].decode("utf-8", errors="replace")
    more = "..." if len(response.content) > SHOWN_BYTES else ""
    return ClientError(
        f"{response.request.url} answered {response.status_code} ({kind}), not JSON: "
        f"{shown!r}{more}",
        "is --url the Asya gateway? something in between (a proxy) may have answered",
    )


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise not_json(response) from None


def _answer(response: httpx.Response, missing: str) -> dict[str, Any]:
    """The JSON object of a 2xx answer, or a named error; ``missing`` is the hint for a 404."""
    if response.status_code == 401:
        raise ClientError("the gateway wants a bearer token", "pass --token (or set ASYA_TOKEN)")
    body = _decode(response)
    if response.is_success and isinstance(body, dict):
        return body
    detail = body.get("detail", body) if isinstance(body, dict) else body
    match response.status_code:
        case 404:
            raise NotFound(str(detail), missing)
        case 409:
            raise Conflict(str(detail), "only a pending or running job can be cancelled")
        case 422:
            errors = detail.get("errors") if isinstance(detail, dict) else detail
            raise ClientError(f"invalid arguments: {errors}", "match the tool's input_schema")
        case _:
            raise ClientError(
                f"the gateway answered {response.status_code}: {json.dumps(detail)[:500]}",
                "see the gateway's log",
            )


def _start(client: httpx.Client, tool: str, arguments: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"tool": tool, "arguments": arguments})
    if response.status_code == 503:  # recorded, but its first message could not be sent
        body = _decode(response)
        if isinstance(body, dict) and body.get("status") == "failed":
            return body
    return _answer(response, "asya jobs, or the pipeline file, shows the tool names")


Partials = Callable[[list[Any]], None]


def _follow(
    client: httpx.Client,
    job_id: str,
    on_progress: Callable[[float, str], None],
    on_partial: Partials,
) -> None:
    """Show the job's progress events and partial results until its event stream ends (the
    job finished)."""
    with client.stream("GET", f"/jobs/{job_id}/events") as response:
        if not response.is_success:
            response.read()
            _answer(response, "the job is gone: asya jobs lists the jobs")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            try:
                data = json.loads(line[5:])
            except ValueError:
                raise ClientError(
                    f"the event stream of job {job_id} sent a line that is not JSON: "
                    f"{line[:SHOWN_BYTES]!r}",
                    "is --url the Asya gateway? something in between may have changed the stream",
                ) from None
            if data.get("type") == "partial":
                on_partial(list(data.get("chunks") or []))
            elif (
                data.get("type") in ("progress", "started", "done")
                and data.get("progress") is not None
            ):
                actor = str(data.get("actor", "")).strip()
                on_progress(float(data["progress"]), data.get("message") or actor)


def call_tool(
    url: str,
    token: str | None,
    tool: str,
    arguments: Any,
    on_progress: Callable[[float, str], None],
    on_start: Callable[[dict[str, Any]], None] = lambda job: None,
    on_partial: Partials = lambda chunks: None,
) -> dict[str, Any]:
    """Start a job and follow it to its end; return the finished job. ``on_start`` is given the
    job as created (its id, its status), ``on_partial`` each event's partial results.

    Ctrl-C raises :class:`Interrupted` with the job's id (None if it was not created yet); the
    job itself goes on: ``cancel_job`` stops it.
    """
    job_id: str | None = None
    try:
        with _client(url, token) as client:
            job = _start(client, tool, arguments)
            if job.get("status") in FINISHED:
                return job
            job_id = str(job["id"])
            on_start(job)
            _follow(client, job_id, on_progress, on_partial)
            return _answer(client.get(f"/jobs/{job_id}"), "the job is gone: asya jobs")
    except KeyboardInterrupt:
        raise Interrupted(job_id) from None


def list_jobs(
    url: str, token: str | None, status: str | None, tool: str | None, limit: int
) -> list[dict[str, Any]]:
    params = {k: v for k, v in {"status": status, "tool": tool, "limit": limit}.items() if v}
    with _client(url, token) as client:
        body = _answer(client.get("/jobs", params=params), "is --url the Asya gateway?")
    return list(body.get("items", []))


def cancel_job(url: str, token: str | None, job_id: str) -> dict[str, Any]:
    """Cancel an unfinished job; the cancelled job. :class:`NotFound` for an unknown id,
    :class:`Conflict` (the message says its status) for a finished one."""
    with _client(url, token) as client:
        response = client.post(f"/jobs/{quote(job_id, safe='')}/cancel")
        try:
            return _answer(response, "asya jobs lists the jobs and their ids")
        except NotFound:
            raise NotFound(
                f"no job {job_id!r} on the gateway at {url}",
                "asya jobs lists the jobs and their ids",
            ) from None
        except Conflict:
            job = _answer(client.get(f"/jobs/{quote(job_id, safe='')}"), "")
            raise Conflict(
                f"job {job_id} has already finished ({job.get('status')}): nothing to cancel",
                "only a pending or running job can be cancelled; asya jobs shows its status",
            ) from None
