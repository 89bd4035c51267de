"""The CLI's errors: each carries a message and a one-line hint for the person at the terminal."""

from __future__ import annotations

__all__ = ["ClientError", "Conflict", "DevError", "Interrupted", "NotFound", "UsageError"]


class UsageError(Exception):
    """Something the user can fix; ``hint`` says how, in one line."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class DevError(UsageError):
    """``asya dev`` cannot run the pipeline (a runtime did not start, a port is taken)."""


class ClientError(UsageError):
    """The gateway could not be reached, or answered something other than what was asked."""


class NotFound(ClientError):
    """The gateway answered 404: no such tool or job."""


class Conflict(ClientError):
    """The gateway answered 409: the job has already finished."""


class Interrupted(Exception):
    """Ctrl-C while following a job; ``job_id`` is None when no job had been created yet."""

    def __init__(self, job_id: str | None) -> None:
        super().__init__(f"interrupted (job {job_id})" if job_id else "interrupted")
        self.job_id = job_id
