"""What becomes of a terminal message or step event the gateway could not apply: a pure
decision, carried out by both brokers (RabbitMQ and the in-process one).

- A message that can never be applied (undecodable, nested too deep, not one of this gateway's
  jobs) goes to the dead-letter queue of its source queue, ``<source>.dead``, with the reason
  in the header :data:`REASON_HEADER`, and is then acked from the source: no redelivery loop,
  and nothing dropped in silence.
- The database being unavailable is transient: the message is not acked (redelivered after a
  backoff delay) and never dead-lettered.
- Any other error is retried once; if it fails again on a redelivery it is dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import DatabaseUnavailable

__all__ = [
    "DEAD_SUFFIX",
    "REASON_HEADER",
    "SOURCE_HEADER",
    "Settle",
    "Verdict",
    "after_error",
    "dead_letter_queue",
    "unknown_job",
    "worst",
]

DEAD_SUFFIX = ".dead"
REASON_HEADER = "x-asya-dead-reason"
SOURCE_HEADER = "x-asya-dead-source"


def dead_letter_queue(source: str) -> str:
    """The dead-letter queue of a source queue (``happy-end`` -> ``happy-end.dead``)."""
    return source + DEAD_SUFFIX


class Settle(StrEnum):
    ACK = "ack"
    RETRY = "retry"  # not acked: redelivered
    DEAD = "dead"  # to the dead-letter queue, then acked


@dataclass(frozen=True)
class Verdict:
    settle: Settle
    reason: str = ""


def after_error(exc: Exception, *, redelivered: bool) -> Verdict:
    """What to do with a message whose handling raised ``exc``."""
    if isinstance(exc, DatabaseUnavailable):
        return Verdict(Settle.RETRY, str(exc))
    reason = f"{type(exc).__name__}: {exc}"[:500]
    if redelivered:
        return Verdict(Settle.DEAD, f"failed again after a redelivery: {reason}")
    return Verdict(Settle.RETRY, reason)


def unknown_job(job_id: str) -> Verdict:
    """A message naming a job id this gateway's database does not have."""
    return Verdict(Settle.DEAD, f"not a job of this gateway: unknown job id {job_id!r}")


_SEVERITY = {Settle.ACK: 0, Settle.DEAD: 1, Settle.RETRY: 2}


def worst(verdicts: list[Verdict]) -> Verdict:
    """One message's verdict from its parts' (none: acked), as for a batch of step events of
    several jobs: a retry outranks a dead letter, which outranks an ack."""
    return max(verdicts, key=lambda v: _SEVERITY[v.settle], default=Verdict(Settle.ACK))
