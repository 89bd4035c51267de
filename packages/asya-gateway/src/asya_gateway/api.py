"""The REST surface: jobs, their Server-Sent Events, health and metrics.

Each route is a module-level function; its dependencies come typed from the app's state
(:func:`gateway_of`, :func:`metrics_of`), and it reaches jobs only through the
:class:`~asya_gateway.service.Gateway`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.routing import Match

from .db import Job, JobEvent
from .errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidArguments,
    InvalidQuery,
    JobFinished,
    NoSuchJob,
    StartFailed,
    UnknownTool,
    public_error,
)
from .jobs import JobQuery
from .metrics import CONTENT_TYPE, GatewayMetrics
from .principals import Principal, principal_of
from .service import MAX_IDEMPOTENCY_KEY, Gateway
from .supervise import Supervisor

__all__ = [
    "CORRELATION_HEADER",
    "build_api",
    "gateway_of",
    "job_view",
    "metrics_of",
    "router",
    "supervisor_of",
]

log = logging.getLogger("asya_gateway")
CORRELATION_HEADER = "X-Correlation-ID"

KEEP_ALIVE = 15  # seconds between SSE comments on an idle stream
PROBE_TIMEOUT = 2.0  # seconds the database has to answer /readyz
_encoder = msgspec.json.Encoder()


class JobJSON(JSONResponse):
    """JSON encoded by msgspec, with no validation pass over the value: a stored input or result
    is served however deep it nests (FastAPI's response validation would recurse over it)."""

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in a worker
# thread, two thread hops per request for what is an attribute read.
async def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def principal(request: Request) -> Principal:
    """The caller (:mod:`asya_gateway.principals`), as the middleware found it."""
    return principal_of(request.scope)


def supervisor_of(request: Request) -> Supervisor:
    supervisor: Supervisor = request.app.state.supervisor
    return supervisor


async def metrics_of(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


Responses = dict[int | str, dict[str, Any]]  # FastAPI's ``responses=``


def _detail(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body = schema or {
        "type": "object",
        "properties": {"detail": {}},
        "required": ["detail"],
    }
    return {"description": description, "content": {"application/json": {"schema": body}}}


_JOB_SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}}}
_INTERNAL = _detail(
    f"unexpected server error: no details, a correlation id (also in {CORRELATION_HEADER}) "
    "to find the traceback in the log",
    {
        "type": "object",
        "properties": {"detail": {"type": "string"}, "correlation_id": {"type": "string"}},
        "required": ["detail", "correlation_id"],
    },
)
# What any request but /healthz and /readyz may get: before the route (Host, token, body
# limits: :mod:`.middleware`), and after it (the database down, an unexpected error).
_COMMON: Responses = {
    401: _detail("missing or invalid bearer token"),
    408: _detail("request body not received in time (ASYA_GATEWAY_BODY_TIMEOUT)"),
    413: _detail("request body over ASYA_GATEWAY_MAX_BODY"),
    421: _detail("Host not served here (ASYA_GATEWAY_ALLOWED_HOSTS)"),
    500: _INTERNAL,
    503: _detail("database unavailable: retry (Retry-After)"),
}
_BAD_TEXT: Responses = {
    422: _detail("a job id, filter or cursor the database cannot hold (NUL)"),
}
_NO_JOB: Responses = {404: _detail("no such job")}
_PROBE: Responses = {
    503: _detail("not ready / unhealthy, with the reason of each check"),
    500: _INTERNAL,
}

# Text the database can hold (no NUL): documented here, checked by errors.check_text (422).
_NO_NUL = {"pattern": "^[^\\x00]*$"}
JobId = Annotated[str, Path(json_schema_extra=_NO_NUL)]
Filter = Annotated[str | None, Query(json_schema_extra=_NO_NUL)]
GatewayDep = Annotated[Gateway, Depends(gateway_of)]
MetricsDep = Annotated[GatewayMetrics, Depends(metrics_of)]
PrincipalDep = Annotated[Principal, Depends(principal)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=MAX_IDEMPOTENCY_KEY,
        description="A retry with the same key (and token) gets the job the first request "
        "started, instead of starting another",
    ),
]
router = APIRouter()


class JobRequest(BaseModel):
    tool: str = Field(min_length=1, max_length=128)
    arguments: dict[str, Any] = Field(default_factory=dict)


@router.get("/healthz", responses=_PROBE)
async def healthz(request: Request) -> JSONResponse:
    """Alive unless a supervised task has not recovered for ``ASYA_GATEWAY_UNHEALTHY_AFTER``
    seconds (then 503: a restart of the process is the remedy left)."""
    stuck = supervisor_of(request).stuck()
    if stuck:
        return JSONResponse({"status": "unhealthy", "stuck": stuck}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz", responses=_PROBE)
async def readyz(request: Request, gateway: GatewayDep) -> JSONResponse:
    """Ready when the database answers (within :data:`PROBE_TIMEOUT`) and every supervised
    task (the consumer above all) works; 503 with the reason of each check that fails."""
    checks = {"database": await gateway.store.ping(PROBE_TIMEOUT)}
    checks.update(supervisor_of(request).checks())
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "OK"},
        **{k: v for k, v in _COMMON.items() if k != 421},  # by the pod's address: any Host
    },
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)


@router.post(
    "/jobs",
    status_code=201,
    responses={
        200: {
            "description": "the job an earlier request with this Idempotency-Key started",
            "content": {"application/json": {"schema": _JOB_SCHEMA}},
        },
        201: {
            "description": "the job, started",
            "content": {"application/json": {"schema": _JOB_SCHEMA}},
        },
        400: _detail("the body is not JSON"),
        404: _detail("unknown tool"),
        422: _detail(
            "invalid arguments, naming each field; arguments nested too deep; a bad "
            "Idempotency-Key, or one used before for another tool or other arguments"
        ),
        **_COMMON,
        503: {
            "description": "the failed job (its first step cannot be reached), or the database "
            "is unavailable",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)
async def create_job(
    body: JobRequest, gateway: GatewayDep, caller: PrincipalDep, key: IdempotencyKey = None
) -> JSONResponse:
    try:
        started = await gateway.start(
            body.tool, body.arguments, principal=caller, via="rest", key=key
        )
    except UnknownTool:
        raise HTTPException(404, f"unknown tool {body.tool!r}") from None
    except InvalidArguments as exc:
        raise HTTPException(422, {"message": "invalid arguments", "errors": exc.errors}) from None
    except IdempotencyConflict as exc:
        raise HTTPException(422, str(exc)) from None
    except StartFailed as exc:
        return JobJSON(job_view(exc.job), status_code=503)
    return JobJSON(job_view(started.job), status_code=200 if started.replayed else 201)


@router.get("/jobs", responses={**_BAD_TEXT, **_COMMON})
async def list_jobs(
    gateway: GatewayDep,
    caller: PrincipalDep,
    status: Filter = None,
    tool: Filter = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Filter = None,
) -> JobJSON:
    query = JobQuery(status=status, tool=tool, limit=limit, before=before)
    jobs = await gateway.list_jobs(query, caller)
    items = [job_view(j) for j in jobs]
    return JobJSON({"items": items, "next": items[-1]["id"] if len(items) == limit else None})


@router.get("/jobs/{job_id}", responses={**_NO_JOB, **_BAD_TEXT, **_COMMON})
async def get_job(job_id: JobId, gateway: GatewayDep, caller: PrincipalDep) -> JobJSON:
    return JobJSON(job_view(await gateway.get(job_id, caller)))


@router.post(
    "/jobs/{job_id}/cancel",
    responses={**_NO_JOB, 409: _detail("the job already finished"), **_BAD_TEXT, **_COMMON},
)
async def cancel_job(job_id: JobId, gateway: GatewayDep, caller: PrincipalDep) -> JobJSON:
    return JobJSON(job_view(await gateway.cancel(job_id, caller)))


def job_view(job: Job) -> dict[str, Any]:
    """A job as REST serves it: its errors (the job's, and each fan-out branch's in the result)
    through :func:`~asya_gateway.errors.public_error`, so no handler traceback reaches a
    client."""
    view = job.to_dict()
    if isinstance(view["error"], dict):
        view["error"] = public_error(view["error"])
    result = view["result"]
    if isinstance(result, dict) and isinstance(result.get("branches"), list):
        branches = [_public_branch(b) for b in result["branches"]]
        view["result"] = {**result, "branches": branches}
    return view


def _public_branch(branch: Any) -> Any:
    if isinstance(branch, dict) and isinstance(branch.get("error"), dict):
        return {**branch, "error": public_error(branch["error"])}
    return branch


async def no_such_job(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "no such job"}, status_code=404)


async def job_finished(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """503 naming the cause (no SQL, no traceback): the client may retry."""
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "2"})


async def invalid_query(_: Request, exc: Exception) -> JSONResponse:
    """422 naming the field and why (before any SQL)."""
    field = exc.field if isinstance(exc, InvalidQuery) else None
    return JSONResponse({"detail": str(exc), "field": field}, status_code=422)


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 with an ``Allow`` naming every method of the path (Starlette names only those of
    the first route that matched it, e.g. ``POST`` alone for ``PUT /jobs``). ``HEAD`` is
    served nowhere (the MCP route's implicit one gets the SDK's 405), so it is not named."""
    path = request.url.path
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({"type": "http", "path": path, "root_path": "", "method": method})[0]
            is Match.FULL
            for route in request.app.router.routes
        )
    ]
    headers = {"Allow": ", ".join(allowed)}
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Any unexpected exception: a JSON 500 with a correlation id and nothing else (no
    traceback, no SQL); the log has the traceback under the same id."""
    correlation = uuid.uuid4().hex
    log.error(
        "unexpected error on %s %s (correlation id %s)",
        request.method,
        request.url.path,
        correlation,
        exc_info=exc,
    )
    return JSONResponse(
        {"detail": "internal error", "correlation_id": correlation},
        status_code=500,
        headers={CORRELATION_HEADER: correlation},
    )


async def too_deep_to_serve(_: Request, exc: Exception) -> JSONResponse:
    """A stored value nested too deep even to decode or encode (older rows; new ones are
    bounded at the door): refused cleanly."""
    return JSONResponse({"detail": "the stored job nests too deep to be served"}, status_code=500)


def sse_event(event: JobEvent) -> ServerSentEvent:
    """A history event as SSE: ``id`` its sequence number, ``event`` its kind, JSON data."""
    data = json.dumps({"type": event.type, **event.data, "time": event.created_at.isoformat()})
    return ServerSentEvent(data, event=event.type, id=str(event.id), sep="\n")


async def _stream(gateway: Gateway, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    async for event in gateway.events(job_id, after=after):
        yield sse_event(event)


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "the job's events, until its final status",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **_NO_JOB,
        **_BAD_TEXT,
        **_COMMON,
    },
)
async def job_events(
    job_id: JobId, request: Request, gateway: GatewayDep, caller: PrincipalDep
) -> EventSourceResponse:
    await gateway.get(job_id, caller)  # 404 before the stream starts
    raw = request.headers.get("last-event-id", "0")
    after = int(raw) if raw.isdigit() else 0
    return EventSourceResponse(
        _stream(gateway, job_id, after),
        headers={"Cache-Control": "no-cache"},
        ping=KEEP_ALIVE,
        sep="\n",
    )


def build_api(gateway: Gateway, metrics: GatewayMetrics, supervisor: Supervisor) -> FastAPI:
    app = FastAPI(title="Asya gateway", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.gateway = gateway
    app.state.metrics = metrics
    app.state.supervisor = supervisor
    app.include_router(router)
    app.add_exception_handler(NoSuchJob, no_such_job)
    app.add_exception_handler(JobFinished, job_finished)
    app.add_exception_handler(DatabaseUnavailable, database_unavailable)
    app.add_exception_handler(405, method_not_allowed)
    app.add_exception_handler(InvalidQuery, invalid_query)
    app.add_exception_handler(RecursionError, too_deep_to_serve)
    app.add_exception_handler(Exception, internal_error)
    return app
