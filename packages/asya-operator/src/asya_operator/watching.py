"""List, then watch from the list's resourceVersion; list again on ``410 Gone`` or any error.

What an event means is the caller's business: :func:`objects` yields every object listed or
changed, and the controller turns each into a work-queue key. Its :class:`~.health.Check`
passes once a list has worked (then it is watching) and fails, with the error, until the next
list works.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from asya_protocol import Backoff

from .health import Check
from .kubeclient import Gone, KubeClient, KubeError

__all__ = ["WATCH_TIMEOUT", "objects"]

log = logging.getLogger("asya_operator")

WATCH_TIMEOUT = 300
"""Seconds the API server keeps one watch open before it ends it (then: list again)."""


async def objects(
    kube: KubeClient,
    api_version: str,
    kind: str,
    namespace: str | None,
    *,
    label_selector: str = "",
    backoff: Backoff | None = None,
    check: Check | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Every object of ``kind`` listed, then every one a watch reports, forever.

    A watch that ends (its timeout) or is too old (``410 Gone``) is followed by a new list at
    once; any other failure waits for the shared reconnect :class:`~asya_protocol.Backoff`,
    which is reset once a watch has run to its end. Every transport failure reaches here as
    :class:`~.kubeclient.Unreachable` (a :class:`KubeError`).
    """
    backoff = backoff or Backoff()
    check = check or Check(kind)
    while True:
        try:
            listing = await kube.list_objects(
                api_version, kind, namespace, label_selector=label_selector
            )
            check.passed()
            for item in listing.get("items") or []:
                yield item
            version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
            async for event in kube.watch(
                api_version,
                kind,
                namespace,
                resource_version=version,
                label_selector=label_selector,
                timeout_seconds=WATCH_TIMEOUT,
            ):
                if event.get("type") != "BOOKMARK":
                    yield event["object"]
            backoff.reset()
        except Gone:
            continue
        except KubeError as exc:
            log.warning("watch %s failed (%s); listing again", check.name, exc)
            check.failed(exc)
            await backoff.sleep()
