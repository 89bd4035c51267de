"""The few Kubernetes API calls the operator makes, by path, without discovery round trips.

Every call raises :class:`kubernetes_asyncio.client.exceptions.ApiException` on an HTTP error.
"""

from __future__ import annotations

from typing import Any, cast

from kubernetes_asyncio.client import ApiClient

__all__ = ["FIELD_MANAGER", "KubeClient", "resource_path"]

FIELD_MANAGER = "asya-operator"

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
    ) -> dict[str, Any]:
        result = await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        return cast(dict[str, Any], result or {})

    async def apply(
        self, obj: dict[str, Any], *, field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply, forcing ownership of the fields we set."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return await self._call(
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("GET", resource_path(api_version, kind, namespace, name))

    async def list_objects(
        self, api_version: str, kind: str, namespace: str | None, *, label_selector: str = ""
    ) -> dict[str, Any]:
        query = [("labelSelector", label_selector)] if label_selector else []
        return await self._call("GET", resource_path(api_version, kind, namespace), query=query)

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
        return await self._call(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def json_patch(
        self, api_version: str, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return await self._call(
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            body=ops,
            content_type="application/json-patch+json",
        )

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self._call(
            "POST", resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace")), body=obj
        )

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return await self._call("PUT", path, body=obj)
