"""Runtime settings: the schema lives in asya-protocol (names, defaults and bounds defined once,
shared with the operator that writes them); this module re-exports it."""

from __future__ import annotations

from asya_protocol.actor_settings import DEFAULT_SOCKET_PATH, RuntimeSettings

__all__ = ["DEFAULT_SOCKET_PATH", "RuntimeSettings"]
