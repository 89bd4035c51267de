"""Control messages: what the gateway tells every sidecar at once (today: a job was cancelled).

The gateway publishes them, transient, to a durable **fanout** exchange (default
``asya.control``); each sidecar binds its own exclusive, auto-delete queue to it and keeps the
cancelled job ids for a while. A sidecar then skips the job's messages it has not started (acked,
never handed to the runtime) and abandons the ones it is running (the runtime cancels an
``async def`` handler as the request's connection closes). They are advisory like step events: a
sidecar that was not listening (not started yet, or reconnecting) runs the job's later steps, and
the gateway ignores what they produce, because the job is already cancelled.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from .errors import ProtocolError

__all__ = [
    "DEFAULT_CONTROL_EXCHANGE",
    "JobControl",
    "JobControlError",
    "JobControlType",
    "decode_job_control",
    "encode_job_control",
]

DEFAULT_CONTROL_EXCHANGE = "asya.control"


class JobControlError(ProtocolError, ValueError):
    """A body on the control exchange that is not a job control message."""


class JobControlType(StrEnum):
    CANCEL = "cancel"  # the job (its JOB_HEADER value) was cancelled: skip and abandon its messages


class JobControl(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: JobControlType
    job_id: str
    """The value of the ``asya-job-id`` header (:data:`~asya_protocol.JOB_HEADER`) of the job's
    messages."""
    time: float
    """Seconds since the epoch, when it was sent."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JobControl)


def encode_job_control(message: JobControl) -> bytes:
    return _encoder.encode(message)


def decode_job_control(body: bytes) -> JobControl:
    """Decode a control message; :class:`JobControlError` if the body is not one."""
    try:
        message = _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise JobControlError(f"not a job control message: {exc}") from None
    if not message.job_id:
        raise JobControlError("not a job control message: empty job_id")
    return message
