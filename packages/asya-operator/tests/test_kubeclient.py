"""HTTP status numbers become named errors in one place, the client boundary."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from asya_operator.kubeclient import (
    TEMPORARY,
    ClientError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeClient,
    KubeError,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unreachable,
    _mapped,
    kube_error,
    resource_path,
)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (410, Gone),
        (422, Invalid),
        (429, TooManyRequests),
        (400, ClientError),
        (0, ClientError),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_each_status_has_its_name(status: int, cls: type[KubeError]) -> None:
    err = kube_error(status, "Reason")
    assert type(err) is cls
    assert isinstance(err, KubeError)
    assert err.status == status


def test_only_server_errors_throttling_and_no_answer_are_temporary() -> None:
    assert isinstance(kube_error(503), TEMPORARY)
    assert isinstance(kube_error(429), TEMPORARY)
    assert isinstance(Unreachable(ConnectionRefusedError("refused")), TEMPORARY)
    assert not isinstance(kube_error(422), TEMPORARY)
    assert not isinstance(kube_error(404), TEMPORARY)


def test_the_api_servers_message_is_carried() -> None:
    body = {"kind": "Status", "message": 'Deployment "x" is invalid: image: Required value'}
    err = kube_error(422, "Unprocessable Entity", json.dumps(body).encode())
    assert err.body == body
    assert err.message == body["message"]
    assert "image: Required value" in str(err)


@pytest.mark.parametrize("body", [None, b"", b"not json", b"[1]", "{}"])
def test_without_a_status_body_the_message_is_the_http_reason(body: object) -> None:
    assert kube_error(500, "Internal Server Error", body).message == (
        "HTTP 500 Internal Server Error"
    )


def test_the_clients_exception_is_mapped() -> None:
    exc = ApiException(status=409, reason="Conflict")
    exc.body = b'{"message": "the object has been modified"}'
    err = _mapped(exc)
    assert isinstance(err, Conflict)
    assert err.message == "the object has been modified"


def test_resource_paths() -> None:
    assert resource_path("apps/v1", "Deployment", "ml", "x") == (
        "/apis/apps/v1/namespaces/ml/deployments/x"
    )
    assert resource_path("v1", "Service", "ml") == "/api/v1/namespaces/ml/services"
    assert resource_path("asya.sh/v1alpha1", "Asya", None) == "/apis/asya.sh/v1alpha1/asyas"


# What aiohttp raises when there is no HTTP answer; not all of it is an OSError.
TRANSPORT = [
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("Response payload is not completed"),
    aiohttp.ClientConnectionError("Connection closed"),
    TimeoutError(),
    ConnectionRefusedError(111, "Connect call failed"),
]


class FailingApi:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def call_api(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc


@pytest.mark.parametrize("exc", TRANSPORT, ids=lambda e: type(e).__name__)
async def test_no_answer_is_unreachable_with_the_cause_chained(exc: BaseException) -> None:
    kube = KubeClient(FailingApi(exc))  # type: ignore[arg-type]
    with pytest.raises(Unreachable) as info:
        await kube.list_objects("asya.sh/v1alpha1", "Asya", None)
    assert info.value.__cause__ is exc
    assert isinstance(info.value, KubeError)
    assert info.value.message.startswith(type(exc).__name__)
    assert str(info.value).startswith("API server unreachable: ")


class Stream:
    """A watch response whose stream yields ``lines`` and then raises ``end`` (or ends)."""

    def __init__(self, lines: list[bytes], end: BaseException | None) -> None:
        self.status, self.reason, self.closed = 200, "OK", False
        self.content = self
        self._lines, self._end = lines, end

    async def readline(self) -> bytes:
        if self._lines:
            return self._lines.pop(0)
        if self._end is not None:
            raise self._end
        return b""

    def close(self) -> None:
        self.closed = True


class StreamingApi:
    def __init__(self, response: Stream) -> None:
        self.response = response

    async def call_api(self, *args: Any, **kwargs: Any) -> Any:
        assert kwargs["_request_timeout"].sock_read > 300  # a dead watch is noticed
        return self.response


EVENT = b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n'


@pytest.mark.parametrize(
    "end",
    [aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("cut"), None],
    ids=["disconnected", "payload", "line-cut-short"],
)
async def test_a_watch_stream_cut_midway_is_unreachable(end: BaseException | None) -> None:
    lines = [EVENT] if end is not None else [EVENT, b'{"type": "MODIF']
    response = Stream(lines, end)
    kube = KubeClient(StreamingApi(response))  # type: ignore[arg-type]
    seen: list[str] = []

    async def watch() -> None:
        async for event in kube.watch("apps/v1", "Deployment", "ns", resource_version="1"):
            seen.append(event["object"]["metadata"]["name"])

    with pytest.raises(Unreachable):
        await watch()
    assert seen == ["a"]
    assert response.closed
