"""Retry bookkeeping, pure: which attempt of its step an envelope is on, and the delay queue a
retried message waits in before it comes back to the actor's queue."""

from __future__ import annotations

import math

import msgspec

from asya_protocol import Envelope

__all__ = [
    "ATTEMPT_HEADER",
    "RETRY_BUCKETS_MS",
    "attempt_of",
    "delay_ms",
    "next_attempt",
    "retry_bucket",
    "retry_queue_name",
    "without_attempt",
]

ATTEMPT_HEADER = "asya-attempt"
"""Envelope header: which attempt of the current step this is (absent means the first)."""

RETRY_BUCKETS_MS: tuple[int, ...] = tuple(1000 * 2**i for i in range(0, 18))  # 1 s .. ~36 h


def attempt_of(envelope: Envelope) -> int:
    """The attempt named by :data:`ATTEMPT_HEADER` (1 when absent or not a number)."""
    raw = envelope.headers.get(ATTEMPT_HEADER)
    try:
        return max(1, int(raw)) if raw else 1
    except ValueError:
        return 1


def without_attempt(envelope: Envelope) -> Envelope:
    """The envelope without :data:`ATTEMPT_HEADER` (the step succeeded or gave up)."""
    if ATTEMPT_HEADER not in envelope.headers:
        return envelope
    headers = {k: v for k, v in envelope.headers.items() if k != ATTEMPT_HEADER}
    return msgspec.structs.replace(envelope, headers=headers)


def next_attempt(envelope: Envelope, attempt: int) -> Envelope:
    """The envelope marked as attempt ``attempt + 1`` of its step."""
    headers = {**envelope.headers, ATTEMPT_HEADER: str(attempt + 1)}
    return msgspec.structs.replace(envelope, headers=headers)


def delay_ms(seconds: float) -> int:
    """A retry delay as a message expiration: whole milliseconds, at least one."""
    return max(1, math.ceil(seconds * 1000))


def retry_bucket(delay: int) -> int:
    """Delay queues come in power-of-two buckets so their number stays small; a message waits
    its own (jittered) delay through the per-message expiration, bounded by its bucket."""
    for bucket in RETRY_BUCKETS_MS:
        if delay <= bucket:
            return bucket
    return RETRY_BUCKETS_MS[-1]


def retry_queue_name(actor: str, delay: int) -> str:
    """The delay queue for a retry of ``actor`` waiting ``delay`` milliseconds."""
    return f"asya-retry.{actor}.{retry_bucket(delay)}"
