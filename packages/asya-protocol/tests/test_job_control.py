from __future__ import annotations

import json

import pytest

from asya_protocol import (
    DEFAULT_CONTROL_EXCHANGE,
    JobControl,
    JobControlError,
    JobControlType,
    ProtocolError,
    decode_job_control,
    encode_job_control,
)


def test_a_cancel_round_trips() -> None:
    message = JobControl(type=JobControlType.CANCEL, job_id="j-1", time=1767225600.5)
    body = encode_job_control(message)
    assert json.loads(body) == {"type": "cancel", "job_id": "j-1", "time": 1767225600.5}
    assert decode_job_control(body) == message


def test_the_documented_example_decodes() -> None:
    body = b'{"type": "cancel", "job_id": "5b0f3c1e-9a7d-4c55-8a51-2f4a6c1d9e20", "time": 1.0}'
    assert decode_job_control(body).job_id == "5b0f3c1e-9a7d-4c55-8a51-2f4a6c1d9e20"
    assert DEFAULT_CONTROL_EXCHANGE == "asya.control"


def test_unknown_fields_are_ignored() -> None:
    body = b'{"type": "cancel", "job_id": "j", "time": 1, "reason": "user"}'
    assert decode_job_control(body) == JobControl(type=JobControlType.CANCEL, job_id="j", time=1)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"type": "cancel", "time": 1}',
        b'{"type": "cancel", "job_id": "j"}',
        b'{"type": "explode", "job_id": "j", "time": 1}',
        b'{"type": "cancel", "job_id": 7, "time": 1}',
        b'{"type": "cancel", "job_id": "", "time": 1}',
    ],
)
def test_a_malformed_body_is_a_job_control_error(body: bytes) -> None:
    with pytest.raises(JobControlError, match="not a job control message") as info:
        decode_job_control(body)
    assert isinstance(info.value, ProtocolError)
    assert isinstance(info.value, ValueError)


def test_an_empty_job_id_is_named() -> None:
    with pytest.raises(JobControlError, match="empty job_id"):
        decode_job_control(b'{"type": "cancel", "job_id": "", "time": 1}')
