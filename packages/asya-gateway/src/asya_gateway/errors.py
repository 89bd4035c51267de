"""Errors of asya-gateway: what its use cases raise, caught by name in REST and MCP alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asya_protocol import SettingsError

if TYPE_CHECKING:
    from .db import Job

__all__ = [
    "DatabaseUnavailable",
    "GatewayError",
    "InvalidArguments",
    "InvalidQuery",
    "JobFinished",
    "NoSuchJob",
    "PublishFailed",
    "SettingsError",
    "StartFailed",
    "UnknownTool",
    "check_text",
    "public_error",
]

# What a client may see of a job's error: the code, the text and where it happened; never the
# handler's traceback (server paths, code) nor a copy of the input (the job has it).
_PUBLIC_ERROR_FIELDS = frozenset({"error", "message", "step", "attempts", "retryable"})
_PUBLIC_DETAILS = frozenset({"type", "size", "limit", "destination"})


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


class IdempotencyConflict(GatewayError):
    """An idempotency key this principal already used for another tool or other arguments."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"idempotency key already used by job {job_id} with another tool or other arguments"
        )
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


class InvalidQuery(GatewayError):
    """A job id, list filter or cursor the database cannot hold (a NUL character, a lone
    surrogate): refused before any SQL. REST answers 422 with the message."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_text(field: str, value: str) -> str:
    """``value`` if PostgreSQL ``text`` can hold it, else :class:`InvalidQuery` naming ``field``.

    The one check for every string a client gives to a query (job ids, filters, cursors), on
    SQLite too, so both databases answer alike.
    """
    if "\x00" in value:
        raise InvalidQuery(field, "contains a NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQuery(field, "is not valid Unicode (a lone surrogate)") from None
    return value


def public_error(error: dict[str, Any]) -> dict[str, Any]:
    """A job's error as a client may see it: ``error`` (the code), ``message``, ``step``,
    ``attempts``, ``retryable`` and harmless ``details`` (``type``, ``size``, ``limit``,
    ``destination``); tracebacks and copies of the input are dropped. A fan-out's
    ``branch_failed`` keeps each branch's error, filtered the same way."""
    public = {k: v for k, v in error.items() if k in _PUBLIC_ERROR_FIELDS}
    details = error.get("details")
    if isinstance(details, dict):
        kept = {k: v for k, v in details.items() if k in _PUBLIC_DETAILS}
        if kept:
            public["details"] = kept
    branches = error.get("branches")
    if isinstance(branches, list):
        public["branches"] = [public_error(b) if isinstance(b, dict) else b for b in branches]
    return public
