"""Errors of asya-runtime: the one users raise, and the ones that stop the process at start."""

from __future__ import annotations

from typing import Any

from asya_protocol import validate_error_code
from asya_protocol.settings import SettingsError

__all__ = ["AsyaError", "HandlerLoadError", "RuntimeStartError", "SettingsError"]


class AsyaError(Exception):
    """Raise from a handler to choose the error code, and whether a retry may help.

    ``retryable=True`` asks the sidecar to retry (if its retry policy allows), ``False`` forbids
    it, ``None`` leaves it to the policy. ``details`` must be JSON-serialisable.

    >>> raise AsyaError("model_busy", "GPU queue full", retryable=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = validate_error_code(code)
        self.message = message
        self.retryable = retryable
        self.details = details


class RuntimeStartError(Exception):
    """The runtime cannot start; the message says why. The process exits with status 2."""


class HandlerLoadError(SettingsError, RuntimeStartError):
    """``ASYA_HANDLER`` names something that cannot be imported or called."""
