"""What a handler may call while it runs: :func:`progress`."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["progress"]

ProgressReporter = Callable[[float | None, str | None], None]

_reporter: ContextVar[ProgressReporter | None] = ContextVar("asya_progress", default=None)


def progress(fraction: float | None = None, message: str | None = None) -> None:
    """Report how far the current request has got: ``fraction`` within 0..1, and/or a message.

    Works from ``def`` and ``async def`` handlers and from generators. Outside a request, or when
    the sidecar did not ask for progress, it does nothing. A fraction outside 0..1 raises
    ``ValueError`` (a bug in the handler, reported as such).
    """
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress fraction must be within 0..1, got {fraction}")
    reporter = _reporter.get()
    if reporter is not None:
        reporter(fraction, message)
