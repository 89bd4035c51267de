"""The queue-cleanup finalizer: tiny pure functions on a resource's metadata, applied by one
merge patch that carries the resourceVersion (so a concurrent change makes it a conflict)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FINALIZER", "finalizer_patch", "finalizers_with"]

FINALIZER = "asya.sh/queue-cleanup"


def finalizers_with(meta: Mapping[str, Any], wanted: bool) -> list[str] | None:
    """The finalizer list with ours present (``wanted``) or absent; None if it already is."""
    finalizers = list(meta.get("finalizers") or [])
    if wanted == (FINALIZER in finalizers):
        return None
    if wanted:
        return [*finalizers, FINALIZER]
    return [f for f in finalizers if f != FINALIZER]


def finalizer_patch(meta: Mapping[str, Any], finalizers: list[str]) -> dict[str, Any]:
    return {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
