"""Kubernetes Events for what a person should see, decided and built purely."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .conditions import Cond
from .model import GROUP, KIND, VERSION

__all__ = ["event_body", "noteworthy"]


def noteworthy(current: Sequence[Mapping[str, Any]], wanted: Sequence[Cond]) -> list[Cond]:
    """The conditions worth an event: each failure as it appears, and Ready turning True (not
    every condition's first True: that would be four events per new resource)."""
    before = {c.get("type"): c.get("status") for c in current}
    return [
        cond
        for cond in wanted
        if before.get(cond.type) != cond.status and (not cond.ok or cond.type == "Ready")
    ]


def event_body(
    obj: Mapping[str, Any], kind: str, reason: str, message: str, *, now: str
) -> dict[str, Any]:
    """A core/v1 Event about the Asya ``obj``; ``kind`` is ``Normal`` or ``Warning``."""
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "asya-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
