"""Errors of asya-gateway: what its use cases raise, caught by name in REST and MCP alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from asya_protocol import SettingsError

if TYPE_CHECKING:
    from .db import Job

__all__ = [
    "DatabaseUnavailable",
    "GatewayError",
    "InvalidArguments",
    "JobFinished",
    "NoSuchJob",
    "PublishFailed",
    "SettingsError",
    "StartFailed",
    "UnknownTool",
]


class GatewayError(Exception):
    """Base class of the gateway's own errors."""


class UnknownTool(GatewayError):
    pass


class InvalidArguments(GatewayError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class PublishFailed(GatewayError):
    """The first envelope could not be delivered (no queue for the first step, broker down)."""


class StartFailed(GatewayError):
    """The job was recorded but its first message could not be published (job is failed)."""

    def __init__(self, job: Job, reason: str) -> None:
        super().__init__(reason)
        self.job = job


class NoSuchJob(GatewayError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no such job {job_id!r}")
        self.job_id = job_id


class JobFinished(GatewayError):
    """The job already finished: it cannot be cancelled."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job already {job.status}")
        self.job = job


class DatabaseUnavailable(GatewayError):
    """The database did not answer (down, restarting, unreachable, or too slow): worth a retry.

    The message names the cause without SQL (``database unavailable: ConnectionRefusedError:
    ...``); REST answers 503 with it, MCP a JSON-RPC error, consumers redeliver the message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"database unavailable: {reason}")
        self.reason = reason
