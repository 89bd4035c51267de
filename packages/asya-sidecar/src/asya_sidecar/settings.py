"""Sidecar settings: the schema lives in asya-protocol (names, defaults and bounds defined once;
the operator builds a sidecar's env from the same fields); this module re-exports it."""

from __future__ import annotations

from asya_protocol.actor_settings import RetryPolicy, SidecarSettings

__all__ = ["RetryPolicy", "SidecarSettings"]
