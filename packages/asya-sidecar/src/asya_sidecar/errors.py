"""Errors of asya-sidecar."""

from __future__ import annotations

from asya_protocol.settings import SettingsError

__all__ = [
    "RuntimeUnavailable",
    "SettingsError",
    "SidecarError",
    "TransportError",
    "Unroutable",
]


class SidecarError(Exception):
    """Base class of the sidecar's own errors."""


class TransportError(SidecarError):
    """The broker could not take a message (connection lost, publish not confirmed).

    Never an error-end case: the delivery is not acked and comes back.
    """


class Unroutable(SidecarError):
    """The broker returned a mandatory publish: no queue is bound to that routing key."""

    def __init__(self, routing_key: str) -> None:
        super().__init__(f"no queue is bound to {routing_key!r}")
        self.routing_key = routing_key


class RuntimeUnavailable(SidecarError):
    """The runtime could not be reached, or dropped the connection mid-request."""
