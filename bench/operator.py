"""Reconcile N Asya resources, creation to Ready-with-workload, on a real kube-apiserver.

Run: ``hatch run bench:operator`` with ``KUBEBUILDER_ASSETS`` (see ``scripts/envtest-assets.sh``)
and ``ASYA_TEST_AMQP_URL`` set. (It runs ``python -P bench/operator.py``: ``-P`` keeps this file
from shadowing the standard library's ``operator`` module.)

Reports the wall time, the operator's API requests per resource (by method), and a baseline
measured in the same run: applying the same objects directly (one server-side apply per object,
no operator), the least any controller could do.

Each Asya scales to zero (KEDA, ``minReplicas: 0``), so Ready needs no kubelet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from asya_operator.builders import Actor, desired_objects
from asya_operator.controller import Controller
from asya_operator.kubeclient import KubeClient
from asya_operator.queues import QueueManager
from asya_testing.kube import assets_dir, control_plane
from asya_testing.kube_fixtures import install_crds

ROOT = Path(__file__).resolve().parents[1]


def api_client(plane: Any) -> client.ApiClient:
    config = client.Configuration(host=plane.host)
    config.ssl_ca_cert, config.cert_file, config.key_file = (
        str(plane.ca_file),
        str(plane.cert_file),
        str(plane.key_file),
    )
    return client.ApiClient(config)


def body(name: str, tag: str) -> dict[str, Any]:
    return {
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "Asya",
        "metadata": {"name": name},
        "spec": {
            "queue": f"bench-{tag}-{name}",
            "transport": {
                "urlSecretRef": {"name": "rabbitmq", "key": "url"},
                "exchange": f"bench-{tag}",
                "happyEnd": f"bench-{tag}-happy",
                "errorEnd": f"bench-{tag}-error",
            },
            "handler": "pipeline.steps:run",
            "scaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 5},
            "workload": {
                "template": {"spec": {"containers": [{"name": "asya-runtime", "image": "m:1"}]}}
            },
        },
    }


async def ready_count(custom: client.CustomObjectsApi, ns: str) -> int:
    listing = await custom.list_namespaced_custom_object("asya.sh", "v1alpha1", ns, "asyas")
    n = 0
    for item in listing["items"]:
        conds = {c["type"]: c["status"] for c in (item.get("status") or {}).get("conditions", [])}
        n += conds.get("Ready") == "True"
    return n


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    assets = assets_dir()
    amqp_url = os.environ.get("ASYA_TEST_AMQP_URL")
    if assets is None or not amqp_url:
        raise SystemExit("set KUBEBUILDER_ASSETS and ASYA_TEST_AMQP_URL (see docs/development.md)")
    tag = uuid.uuid4().hex[:6]
    with control_plane(assets) as plane:
        async with api_client(plane) as admin, api_client(plane) as operator_api:
            await install_crds(admin, ROOT)
            core, custom = client.CoreV1Api(admin), client.CustomObjectsApi(admin)
            for ns in ("bench", "baseline"):
                await core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
            # Baseline: the objects applied directly, sequentially, like one worker would.
            kube_admin = KubeClient(admin)
            started = time.perf_counter()
            for i in range(args.resources):
                obj = body(f"a{i}", tag)
                obj["metadata"].update(namespace="baseline", uid=str(uuid.uuid4()))
                for desired in desired_objects(Actor.from_resource(obj)):
                    desired["metadata"].pop("ownerReferences")
                    await kube_admin.apply(desired)
            baseline = time.perf_counter() - started

            counts: dict[str, int] = {}
            original = operator_api.request

            async def counted(method: str, url: str, *a: Any, **kw: Any) -> Any:
                counts[method] = counts.get(method, 0) + 1
                return await original(method, url, *a, **kw)

            operator_api.request = counted  # type: ignore[method-assign]
            queues = QueueManager(amqp_url)
            controller = Controller(
                KubeClient(operator_api), queues, namespaces=("bench",), workers=args.workers
            )
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(controller.run(stop))
                started = time.perf_counter()
                for i in range(args.resources):
                    await custom.create_namespaced_custom_object(
                        "asya.sh", "v1alpha1", "bench", "asyas", body(f"a{i}", tag)
                    )
                created = time.perf_counter() - started
                while await ready_count(custom, "bench") < args.resources:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                elapsed = time.perf_counter() - started
                stop.set()
            await queues.close()
            # Clean the broker: the queues and exchange the bench declared.
            cleanup = QueueManager(amqp_url)
            for i in range(args.resources):
                await cleanup.delete(f"bench-{tag}-a{i}")
            await cleanup.delete(f"bench-{tag}-happy")
            await cleanup.delete(f"bench-{tag}-error")
            await cleanup.close()
    n = args.resources
    total = sum(counts.values())
    print(
        f"{n} Asya resources Ready with workload in {elapsed:.1f}s "
        f"({elapsed / n * 1000:.0f} ms each; creating them took {created:.1f}s)"
    )
    print(
        f"operator API requests: {total / n:.1f} per resource "
        + ", ".join(f"{m} {c / n:.1f}" for m, c in sorted(counts.items()))
    )
    print(f"{controller.reconciles} reconciles ({controller.reconciles / n:.1f} per resource)")
    print(
        f"baseline (objects applied directly, no operator): {baseline:.1f}s; "
        f"operator/baseline: {elapsed / baseline:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
