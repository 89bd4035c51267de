"""pytest fixtures around :mod:`asya_testing.kube`: a control plane per session, CRDs, and a
fresh namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, cast

import pytest

from .kube import ControlPlane, assets_dir, control_plane
from .services import unavailable

__all__ = [
    "Rejected",
    "crd_documents",
    "install_crds",
    "kube_api",
    "kube_control_plane",
    "kube_namespace",
    "server_side_apply",
]

OWN_CRDS = ("deploy/helm/asya/crds",)
KEDA_CRDS = "../shared/third_party/keda-crds"


def crd_documents(root: Path) -> list[dict[str, Any]]:
    """Our CRDs from deploy/, and KEDA's: the real ones from ../shared/third_party when that
    folder exists, else the project's schema-less stand-ins."""
    import yaml  # noqa: PLC0415

    files: list[Path] = []
    for folder in OWN_CRDS:
        files += sorted((root / folder).glob("*.yaml"))
    keda = (root / KEDA_CRDS).resolve()
    docs: list[dict[str, Any]] = []
    if keda.is_dir():
        files += sorted(keda.glob("*.yaml"))
    else:
        text = resources.files("asya_testing").joinpath("data/keda-minimal-crds.yaml").read_text()
        docs += [d for d in yaml.safe_load_all(text) if d]
    for file in files:
        docs += [d for d in yaml.safe_load_all(file.read_text()) if d]
    return [d for d in docs if d.get("kind") == "CustomResourceDefinition"]


@pytest.fixture(scope="session")
def kube_control_plane() -> Iterator[ControlPlane]:
    """A real kube-apiserver + etcd (skips, or fails in CI, without KUBEBUILDER_ASSETS)."""
    assets = assets_dir()
    if assets is None:
        unavailable(
            "KUBEBUILDER_ASSETS is not set to a directory with kube-apiserver and etcd "
            "(run: export KUBEBUILDER_ASSETS=$(bash scripts/envtest-assets.sh))"
        )
        raise AssertionError("unreachable")  # pragma: no cover - unavailable() always raises
    with control_plane(assets) as plane:
        yield plane


_installed: set[str] = set()


async def install_crds(api: Any, root: Path) -> None:
    import asyncio  # noqa: PLC0415

    from kubernetes_asyncio import client  # noqa: PLC0415
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

    ext = client.ApiextensionsV1Api(api)
    names = []
    for doc in crd_documents(root):
        name = doc["metadata"]["name"]
        names.append(name)
        try:
            await ext.create_custom_resource_definition(cast(Any, doc))
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = await ext.read_custom_resource_definition(name)
            doc["metadata"]["resourceVersion"] = current.metadata.resource_version
            await ext.replace_custom_resource_definition(name, cast(Any, doc))
    custom = client.CustomObjectsApi(api)
    async with asyncio.timeout(60):
        for name in names:
            while True:
                crd = await ext.read_custom_resource_definition(name)
                conditions = crd.status.conditions or []
                if any(c.type == "Established" and c.status == "True" for c in conditions):
                    break
                await asyncio.sleep(0.1)
            # Established comes a moment before the endpoints are served: wait for a list to work.
            version = crd.spec.versions[0].name
            while True:
                try:
                    await custom.list_cluster_custom_object(
                        crd.spec.group, version, crd.spec.names.plural
                    )
                    break
                except ApiException as exc:
                    if exc.status not in (404, 429):  # not served yet / storage initialising
                        raise
                    await asyncio.sleep(0.1)


@pytest.fixture
async def kube_api(
    kube_control_plane: ControlPlane, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """A kubernetes-asyncio ApiClient for the test control plane, with the CRDs installed."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    config = client.Configuration(host=kube_control_plane.host)
    config.ssl_ca_cert = str(kube_control_plane.ca_file)
    config.cert_file = str(kube_control_plane.cert_file)
    config.key_file = str(kube_control_plane.key_file)
    async with client.ApiClient(config) as api:
        if kube_control_plane.host not in _installed:
            await install_crds(api, Path(str(request.config.rootpath)))
            _installed.add(kube_control_plane.host)
        yield api


@pytest.fixture
async def kube_namespace(kube_api: Any) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    await core.create_namespace(cast(Any, {"metadata": {"name": name}}))
    try:
        yield name
    finally:
        await core.delete_namespace(name)


class Rejected(Exception):
    """The API server refused an object (its Status message is the exception's text)."""


async def server_side_apply(
    api: Any, doc: dict[str, Any], *, dry_run: bool = True, field_manager: str = "asya-tests"
) -> dict[str, Any]:
    """Server-side apply ``doc`` (a dry run by default); raise :class:`Rejected` on refusal.

    kubernetes-asyncio's dynamic client returns a ``Status`` object instead of raising for some
    failures, so this checks both ways.
    """
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415
    from kubernetes_asyncio.dynamic import DynamicClient  # noqa: PLC0415

    async with DynamicClient(api) as dyn:
        resource = await dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        try:
            result = await dyn.server_side_apply(
                resource,
                body=doc,
                namespace=doc["metadata"].get("namespace"),
                field_manager=field_manager,
                dry_run="All" if dry_run else None,
            )
        except ApiException as exc:
            raise Rejected(str(exc.body)) from exc
    out: dict[str, Any] = result.to_dict()
    if out.get("kind") == "Status" and out.get("status") == "Failure":
        raise Rejected(str(out.get("message")))
    return out
