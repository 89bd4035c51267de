"""`asya-operator run` as a process: kubeconfig, leader election with two replicas, failover."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from asya_testing.kube import ControlPlane
from asya_testing.processes import managed_process


async def test_two_replicas_one_leader_and_failover(
    kube_control_plane: ControlPlane,
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    eventually: Any,
    amqp_url: str,
    tmp_path: Path,
) -> None:
    from asya_operator.kubeclient import KubeClient

    env = {
        **os.environ,
        "KUBECONFIG": str(kube_control_plane.kubeconfig()),
        "ASYA_RABBITMQ_URL": amqp_url,
        "ASYA_OPERATOR_NAMESPACE": kube_namespace,
        "ASYA_WATCH_NAMESPACES": kube_namespace,
        "ASYA_LEASE_SECONDS": "2",
    }
    kube = KubeClient(kube_api)
    argv = [sys.executable, "-m", "asya_operator", "run"]
    with (
        managed_process(
            argv, {**env, "ASYA_OPERATOR_POD_NAME": "op-1"}, log_dir=tmp_path, name="op1"
        ) as op1,
        managed_process(
            argv, {**env, "ASYA_OPERATOR_POD_NAME": "op-2"}, log_dir=tmp_path, name="op2"
        ) as op2,
    ):

        async def holder() -> str:
            lease = await kube.get(
                "coordination.k8s.io/v1", "Lease", kube_namespace, "asya-operator"
            )
            return str(lease["spec"]["holderIdentity"])

        leader = await eventually(holder)
        procs = {"op-1": op1, "op-2": op2}
        await custom.create_namespaced_custom_object(
            "asya.sh",
            "v1alpha1",
            kube_namespace,
            "asyas",
            asya_body("first", scaling={"enabled": True}),
        )
        await eventually(lambda: _ready(custom, kube_namespace, "first"))
        other = "op-2" if leader == "op-1" else "op-1"
        assert "reconciling Asya resources" not in procs[other].log()
        # Both are ready: the leader watching, the standby answered by the Lease.
        for proc in procs.values():
            await eventually(lambda proc=proc: _probe(proc.log(), "/readyz"))
        procs[leader].signal(signal.SIGTERM)  # releases the lease on the way out
        assert procs[leader].wait(timeout=30) == 0, procs[leader].log()
        await eventually(lambda: _is(holder, other))
        await custom.create_namespaced_custom_object(
            "asya.sh",
            "v1alpha1",
            kube_namespace,
            "asyas",
            asya_body("second", scaling={"enabled": True}),
        )
        await eventually(lambda: _ready(custom, kube_namespace, "second"))
        assert "reconciling Asya resources" in procs[other].log()


async def _probe(log: str, path: str) -> dict[str, Any]:
    match = re.search(r"probes on (http://127\.0\.0\.1:\d+)/healthz", log)
    assert match, log
    async with httpx.AsyncClient(base_url=match.group(1)) as http:
        response = await http.get(path)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _is(get: Any, expected: str) -> bool:
    return bool(await get() == expected)


async def _ready(custom: Any, ns: str, name: str) -> bool:
    obj = await custom.get_namespaced_custom_object("asya.sh", "v1alpha1", ns, "asyas", name)
    conds = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}
    return conds.get("Ready") == "True"
