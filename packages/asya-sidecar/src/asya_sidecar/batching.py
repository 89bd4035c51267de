"""Dynamic micro-batching, pure: how big a batch may get and how long it may wait, and how one
batch outcome becomes one runtime outcome per item (each then settled by
:func:`~asya_sidecar.decision.after_runtime`, exactly as a message sent alone)."""

from __future__ import annotations

from dataclasses import dataclass

from asya_protocol import BatchLimits, BatchOkReply, ErrorReply, split_batch_reply

from .decision import RuntimeOutcome, RuntimeTimeout, RuntimeUnavailableOutcome
from .settings import SidecarSettings

__all__ = [
    "BATCH_FRAME_OVERHEAD",
    "MAX_PREFETCH",
    "BatchOutcome",
    "BatchPlan",
    "batch_plan",
    "prefetch_for",
    "split_outcome",
]

BatchOutcome = BatchOkReply | ErrorReply | RuntimeTimeout | RuntimeUnavailableOutcome

MAX_PREFETCH = 65_535
"""AMQP's prefetch count is a 16-bit number."""
BATCH_FRAME_OVERHEAD = 64
"""Bytes counted per item beyond its body when bounding a batch by the frame limit: the comma
and, in envelope mode, the id the sidecar may add."""


@dataclass(frozen=True)
class BatchPlan:
    """At most ``max_size`` deliveries per request, gathered for at most ``max_wait`` seconds
    after the first one, and at most ``max_bytes`` of bodies in all."""

    max_size: int
    max_wait: float
    max_bytes: int


def batch_plan(limits: BatchLimits | None, settings: SidecarSettings) -> BatchPlan | None:
    """The batching to do with a runtime that said ``limits`` (``None``: it did not negotiate
    ``batch``): each limit is the smaller of the handler's and the sidecar's cap."""
    if limits is None or settings.batch_max_size == 1:
        return None
    size = max(1, limits.max_size)
    if settings.batch_max_size is not None:
        size = min(size, settings.batch_max_size)
    wait = max(0.0, limits.max_wait_ms / 1000)
    if settings.batch_max_wait is not None:
        wait = min(wait, settings.batch_max_wait)
    return BatchPlan(max_size=size, max_wait=wait, max_bytes=settings.max_frame_size - 16)


def prefetch_for(plan: BatchPlan | None, concurrency: int) -> int:
    """Deliveries the broker may hand over unacknowledged: enough to fill ``concurrency``
    batches at once (at most :data:`MAX_PREFETCH`)."""
    if plan is None:
        return concurrency
    return min(MAX_PREFETCH, concurrency * plan.max_size)


def split_outcome(outcome: BatchOutcome, size: int) -> list[RuntimeOutcome]:
    """One runtime outcome per item of a batch of ``size``: a timeout or a lost runtime is every
    item's; a batch reply splits as :func:`~asya_protocol.split_batch_reply` says."""
    if isinstance(outcome, RuntimeTimeout | RuntimeUnavailableOutcome):
        return [outcome] * size
    return list(split_batch_reply(outcome, size))
