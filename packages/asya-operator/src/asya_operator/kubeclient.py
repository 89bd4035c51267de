"""The few Kubernetes API calls the operator makes, by path, without discovery round trips.

This is the one place that sees HTTP status numbers: every call raises a :class:`KubeError`
subclass named for what happened (:class:`NotFound`, :class:`Conflict`, :class:`Gone`, ...),
carrying the API server's ``Status`` body and chaining the client's exception. Everything above
catches names, never numbers. Transport failures (refused, reset, timed out, a watch stream cut
mid-line) are named too: :class:`Unreachable`, so nothing aiohttp raises escapes unnamed. Every
request has a deadline (:data:`REQUEST_TIMEOUT`; a watch: its own timeout plus a margin).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp  # kubernetes-asyncio's transport
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "FIELD_MANAGER",
    "ClientError",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeClient",
    "KubeError",
    "NotFound",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "Unreachable",
    "kube_error",
    "resource_path",
]

FIELD_MANAGER = "asya-operator"
REQUEST_TIMEOUT = 30.0
"""Seconds one request (not a watch) may take, connecting included."""
CONNECT_TIMEOUT = 10.0
WATCH_MARGIN = 30.0
"""Seconds of silence beyond a watch's own timeout after which its connection counts as dead."""


class KubeError(Exception):
    """An error answer from the API server (or a watch's ERROR event)."""

    def __init__(self, status: int, reason: str, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.body = body or {}
        super().__init__(f"HTTP {status} {reason}: {self.message}")

    @property
    def message(self) -> str:
        """The API server's own message (e.g. which field it refused), else the HTTP reason."""
        message = self.body.get("message")
        return str(message) if message else f"HTTP {self.status} {self.reason}"


class ClientError(KubeError):
    """A 4xx answer without a class of its own: the request is wrong, retrying will not help."""


class ServerError(KubeError):
    """A 5xx answer: the API server (or something behind it) failed; a temporary error."""


class Unauthorized(ClientError):
    """401."""


class Forbidden(ClientError):
    """403: RBAC refuses the request."""


class NotFound(ClientError):
    """404."""


class Conflict(ClientError):
    """409: already exists, or the resourceVersion we wrote against is stale."""


class Gone(ClientError):
    """410: a watch's resourceVersion is too old; list again."""


class Invalid(ClientError):
    """422: the object fails validation (schema, CEL rule, immutable field)."""


class TooManyRequests(ClientError):
    """429: throttled (API priority and fairness); a temporary error."""


class Unreachable(KubeError):
    """No answer: the connection was refused, reset, timed out, or a watch stream was cut (status
    0); a temporary error. The transport's exception is chained."""

    def __init__(self, cause: BaseException) -> None:
        detail = str(cause) or type(cause).__name__
        self.status = 0
        self.reason = type(cause).__name__
        self.body = {"message": f"{self.reason}: {detail}" if str(cause) else detail}
        Exception.__init__(self, f"API server unreachable: {self.message}")


TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
"""What the client raises when there is no HTTP answer (aiohttp's errors are not all OSErrors:
``ServerDisconnectedError`` and ``ClientPayloadError`` are not)."""

TEMPORARY: tuple[type[KubeError], ...] = (ServerError, TooManyRequests, Unreachable)
"""The errors a retry can cure: the reconcile re-raises these instead of reporting them."""

_BY_STATUS: dict[int, type[KubeError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def kube_error(status: int, reason: str = "", body: object = None) -> KubeError:
    """The named error for an HTTP status; ``body`` is a ``Status`` object, as JSON or parsed."""
    parsed: Any = body
    if isinstance(body, bytes | str):
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {}
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ClientError)
    return cls(status, reason, parsed if isinstance(parsed, dict) else {})


def _mapped(exc: ApiException) -> KubeError:
    return kube_error(int(exc.status or 0), str(exc.reason or ""), exc.body)


_REQUEST = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)


async def _read(response: Any) -> bytes:
    try:
        return cast(bytes, await response.read())
    except TRANSPORT_ERRORS as exc:
        raise Unreachable(exc) from exc


async def _next_event(response: Any) -> dict[str, Any] | None:
    """The next event of a watch stream; None at its end. A cut stream (a transport error, or a
    last line cut short) raises :class:`Unreachable`."""
    try:
        line = await response.content.readline()
        return cast(dict[str, Any], json.loads(line)) if line else None
    except (*TRANSPORT_ERRORS, ValueError) as exc:  # ValueError: a line cut short
        raise Unreachable(exc) from exc


# (apiVersion, kind) -> plural; every kind the operator touches is namespaced.
_PLURALS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("batch/v1", "Job"): "jobs",
    ("v1", "Service"): "services",
    ("v1", "Event"): "events",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
    ("keda.sh/v1alpha1", "ScaledJob"): "scaledjobs",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentications",
    ("asya.sh/v1alpha1", "Asya"): "asyas",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}


def resource_path(
    api_version: str, kind: str, namespace: str | None, name: str | None = None
) -> str:
    plural = _PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


class KubeClient:
    """Thin JSON calls over a kubernetes-asyncio :class:`ApiClient` (which counts as one
    request per call: see ``bench/operator.py``)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        stream: bool = False,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        try:
            return await self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=not stream,
                _request_timeout=timeout or _REQUEST,
            )
        except ApiException as exc:
            raise _mapped(exc) from exc
        except TRANSPORT_ERRORS as exc:
            raise Unreachable(exc) from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return cast(dict[str, Any], await self._call(method, path, **kwargs) or {})

    async def apply(
        self, obj: dict[str, Any], *, field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply, forcing ownership of the fields we set."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return await self._json(
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._json("GET", resource_path(api_version, kind, namespace, name))

    async def list_objects(
        self, api_version: str, kind: str, namespace: str | None, *, label_selector: str = ""
    ) -> dict[str, Any]:
        """A list (``items`` and ``metadata.resourceVersion``); all namespaces for None."""
        query = [("labelSelector", label_selector)] if label_selector else []
        return await self._json("GET", resource_path(api_version, kind, namespace), query=query)

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        resource_version: str,
        label_selector: str = "",
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``type``, ``object``) from ``resource_version`` until the server ends
        the watch; an ERROR event (410 Gone for a version too old) raises its :class:`KubeError`.
        """
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        timeout = aiohttp.ClientTimeout(
            connect=CONNECT_TIMEOUT, sock_read=timeout_seconds + WATCH_MARGIN
        )
        response = await self._call(
            "GET",
            resource_path(api_version, kind, namespace),
            query=query,
            stream=True,
            timeout=timeout,
        )
        try:
            if not 200 <= response.status <= 299:
                raise kube_error(response.status, str(response.reason or ""), await _read(response))
            while event := await _next_event(response):
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise kube_error(int(status.get("code") or 0), "watch error", status)
                yield event
        finally:
            response.close()

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        await self._call(
            "DELETE",
            resource_path(api_version, kind, namespace, name),
            body={"propagationPolicy": "Background"},
        )

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str = "",
    ) -> dict[str, Any]:
        path = resource_path(api_version, kind, namespace, name)
        if subresource:
            path = f"{path}/{subresource}"
        return await self._json(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return await self._json("POST", path, body=obj)

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return await self._json("PUT", path, body=obj)
