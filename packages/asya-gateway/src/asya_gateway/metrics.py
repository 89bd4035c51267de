"""The gateway's Prometheus metrics (``GET /metrics``), Prometheus naming conventions.

- ``asya_gateway_jobs_started_total{tool, via}``: jobs started, ``via`` ``rest`` or ``mcp``;
- ``asya_gateway_jobs_finished_total{tool, status}``: jobs this replica saw finish, by final
  status (``succeeded``, ``failed``, ``timed_out``, ``cancelled``);
- ``asya_gateway_job_duration_seconds{tool}``: creation to finish of those jobs (histogram);
- ``asya_gateway_jobs_unfinished``: pending and running jobs in the database (all replicas'),
  counted by the sweeper every few seconds;
- ``asya_gateway_http_requests_total{route, method, status}``: HTTP requests answered, ``route``
  the endpoint's template (``/jobs/{job_id}``), so ids never become labels.

Each :class:`GatewayMetrics` has its own registry (two gateways in one process count apart).
"""

from __future__ import annotations

import datetime
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .db import Job

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "RequestMetrics", "route_of"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_ROUTES = (
    (re.compile(r"/jobs/[^/]+/events"), "/jobs/{job_id}/events"),
    (re.compile(r"/jobs/[^/]+/cancel"), "/jobs/{job_id}/cancel"),
    (re.compile(r"/jobs/[^/]+"), "/jobs/{job_id}"),
)
_FIXED = frozenset({"/jobs", "/mcp", "/metrics", "/healthz", "/readyz", "/openapi.json"})


def route_of(path: str) -> str:
    """The endpoint template a path belongs to; ``other`` for any path the gateway has not."""
    if path in _FIXED:
        return path
    for pattern, route in _ROUTES:
        if pattern.fullmatch(path):
            return route
    return "other"


def _aware(moment: datetime.datetime) -> datetime.datetime:
    """SQLite gives back stored moments without their (UTC) offset; new ones carry it."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = Counter(
            "asya_gateway_jobs_started",
            "Jobs started, by tool and interface",
            ["tool", "via"],
            registry=self.registry,
        )
        self.finished = Counter(
            "asya_gateway_jobs_finished",
            "Jobs seen finishing by this replica, by tool and final status",
            ["tool", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "asya_gateway_job_duration_seconds",
            "Seconds from a job's creation to its finish",
            ["tool"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.unfinished = Gauge(
            "asya_gateway_jobs_unfinished",
            "Pending and running jobs in the database",
            registry=self.registry,
        )
        self.requests = Counter(
            "asya_gateway_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )

    def job_started(self, tool: str, via: str) -> None:
        self.started.labels(tool=tool, via=via).inc()

    def job_finished(self, job: Job) -> None:
        """Count a job that has just reached its final status."""
        self.finished.labels(tool=job.tool, status=job.status).inc()
        if job.finished_at is not None:
            seconds = (_aware(job.finished_at) - _aware(job.created_at)).total_seconds()
            self.duration.labels(tool=job.tool).observe(max(seconds, 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting every HTTP answer by route template, method and status (a
    request that gets no answer, a dropped connection, is not counted)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(
                    route=route_of(scope["path"]),
                    method=scope["method"],
                    status=str(message["status"]),
                ).inc()
            await send(message)

        await self.app(scope, receive, counted)
