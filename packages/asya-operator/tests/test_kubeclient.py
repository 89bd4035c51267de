"""HTTP status numbers become named errors in one place, the client boundary."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from asya_operator.kubeclient import (
    TEMPORARY,
    ClientError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
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


def test_only_server_errors_and_throttling_are_temporary() -> None:
    assert isinstance(kube_error(503), TEMPORARY)
    assert isinstance(kube_error(429), TEMPORARY)
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
