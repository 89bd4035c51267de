"""SIGTERM at any moment of `asya-operator run`'s start-up (kubeconfig, the lease wait) or
once it reconciles ends it promptly with exit code 0."""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from asya_testing.kube import ControlPlane
from asya_testing.processes import START_MOMENTS, managed_process, sigterm_at, wait_until


@pytest.mark.parametrize(
    "moment", [*START_MOMENTS, 1.0, None], ids=lambda m: "ready" if m is None else f"{m}s"
)
def test_sigterm_during_start_or_once_reconciling(
    kube_control_plane: ControlPlane,
    kube_namespace: str,
    amqp_url: str,
    tmp_path: Path,
    moment: float | None,
) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_control_plane.kubeconfig()),
        "ASYA_RABBITMQ_URL": amqp_url,
        "ASYA_OPERATOR_NAMESPACE": kube_namespace,
        "ASYA_WATCH_NAMESPACES": kube_namespace,
        "ASYA_OPERATOR_POD_NAME": "op-sig",
    }
    argv = [sys.executable, "-m", "asya_operator", "run"]
    with managed_process(argv, env, log_dir=tmp_path, name="operator") as proc:
        if moment is None:
            wait_until(
                lambda: not proc.alive() or "reconciling Asya resources" in proc.log(),
                timeout=60,
                what="operator reconciling",
            )
        sigterm_at(proc, moment)


@pytest.mark.parametrize("moment", [0.3, 1.0, 3.0], ids=lambda m: f"{m}s")
async def test_sigterm_while_waiting_for_the_lease_leaves_it_alone(
    kube_control_plane: ControlPlane,
    kube_api: Any,
    kube_namespace: str,
    amqp_url: str,
    tmp_path: Path,
    moment: float,
) -> None:
    """Another replica holds the lease: stopped while waiting, the operator exits 0 and does
    not touch the lease (it never held it)."""
    from kubernetes_asyncio import client

    leases = client.CoordinationV1Api(kube_api)
    now = datetime.datetime.now(datetime.UTC)
    await leases.create_namespaced_lease(
        kube_namespace,
        {
            "metadata": {"name": "asya-operator"},
            "spec": {
                "holderIdentity": "other",
                "leaseDurationSeconds": 3600,
                "acquireTime": now.isoformat(timespec="microseconds"),
                "renewTime": now.isoformat(timespec="microseconds"),
            },
        },
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_control_plane.kubeconfig()),
        "ASYA_RABBITMQ_URL": amqp_url,
        "ASYA_OPERATOR_NAMESPACE": kube_namespace,
        "ASYA_WATCH_NAMESPACES": kube_namespace,
        "ASYA_OPERATOR_POD_NAME": "op-waiting",
    }
    argv = [sys.executable, "-m", "asya_operator", "run"]
    with managed_process(argv, env, log_dir=tmp_path, name="operator") as proc:
        await asyncio.to_thread(
            wait_until,
            lambda: not proc.alive() or "waiting for the lease" in proc.log(),
            timeout=30,
        )
        await asyncio.to_thread(sigterm_at, proc, moment)
        assert "reconciling" not in proc.log()
    lease = await leases.read_namespaced_lease("asya-operator", kube_namespace)
    assert lease.spec.holder_identity == "other"
