"""The probes tell the truth: an operator that cannot do its work says so on /readyz at once and
on /healthz after ``ASYA_OPERATOR_UNHEALTHY_AFTER``, and recovers without a restart.

Run in-process through :class:`~asya_operator.runner.Operator`, the object ``asya-operator run``
runs, against the real API server: with credentials RBAC refuses (impersonating a user with no
bindings), and through a TCP proxy to the API server that goes down and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from kubernetes_asyncio import client

from asya_operator.runner import Operator
from asya_operator.settings import OperatorSettings
from asya_testing.kube import ControlPlane
from asya_testing.proxy import TcpProxy

log = logging.getLogger("test_probes")


def api_config(plane: ControlPlane, host: str | None = None) -> client.Configuration:
    config = client.Configuration(host=host or plane.host)
    config.ssl_ca_cert = str(plane.ca_file)
    config.cert_file = str(plane.cert_file)
    config.key_file = str(plane.key_file)
    return config


def settings(namespace: str, amqp_url: str, **env: str) -> OperatorSettings:
    return OperatorSettings.from_env(
        {
            "ASYA_RABBITMQ_URL": amqp_url,
            "ASYA_OPERATOR_NAMESPACE": namespace,
            "ASYA_WATCH_NAMESPACES": namespace,
            "ASYA_OPERATOR_POD_NAME": "op-probes",
            "ASYA_OPERATOR_HTTP_HOST": "127.0.0.1",
            "ASYA_OPERATOR_HTTP_PORT": "0",
            **env,
        }
    )


class Running:
    """An operator running in a task, and its probes."""

    def __init__(self, operator: Operator, task: asyncio.Task[int]) -> None:
        self.operator, self.task = operator, task
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{operator.probes.port}")
        self.t0 = asyncio.get_running_loop().time()

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    async def probe(self, path: str, status: int) -> dict[str, Any]:
        """The probe's JSON once it answers ``status`` (for ``eventually``)."""
        assert not self.task.done(), "the operator ended"
        response = await self.http.get(path)
        assert response.status_code == status, response.text
        return dict(response.json())


@contextlib.asynccontextmanager
async def operating(config: OperatorSettings, api: Any) -> AsyncIterator[Running]:
    """An Operator running on ``api`` (leave before the ApiClient closes); it must end with 0."""
    operator = Operator(config, api)
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop), name="operator")
    try:
        await asyncio.wait_for(operator.listening.wait(), 10)
        running = Running(operator, task)
        try:
            yield running
        finally:
            await running.http.aclose()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


async def test_forbidden_is_not_ready_then_unhealthy_and_recovers_when_granted(
    kube_control_plane: ControlPlane,
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    amqp_url: str,
    eventually: Any,
) -> None:
    user = f"asya-test-nobody-{uuid.uuid4().hex[:6]}"
    async with client.ApiClient(api_config(kube_control_plane)) as api:
        api.set_default_header("Impersonate-User", user)  # a user no binding names: RBAC refuses
        config = settings(
            kube_namespace,
            amqp_url,
            ASYA_LEADER_ELECTION="false",
            ASYA_OPERATOR_UNHEALTHY_AFTER="2",
        )
        async with operating(config, api) as op:
            await _forbidden_then_granted(
                op, kube_api, kube_namespace, custom, asya_body, user, eventually
            )


async def _forbidden_then_granted(
    op: Running,
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    user: str,
    eventually: Any,
) -> None:
    async def forbidden() -> dict[str, Any]:
        body = await op.probe("/readyz", 503)
        assert body["ready"] is False
        assert body["checks"][f"{kube_namespace}/asyas"].startswith("Forbidden: "), body
        assert "cannot list" in body["checks"][f"{kube_namespace}/asyas"]
        return body

    body = await eventually(forbidden, timeout=10)
    not_ready = op.elapsed()
    _matches_the_docs(body, kube_namespace)
    assert (await op.http.get("/healthz")).status_code == 200  # not yet for 2 s
    stuck = await eventually(lambda: op.probe("/healthz", 503), timeout=15)
    unhealthy = op.elapsed()
    assert unhealthy >= 2.0
    assert "Forbidden" in stuck["failing"][f"{kube_namespace}/asyas"]

    rbac = client.RbacAuthorizationV1Api(kube_api)
    await rbac.create_namespaced_role_binding(
        kube_namespace,
        {  # type: ignore[arg-type]
            "metadata": {"name": "asya-operator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )
    granted = op.elapsed()
    ready = await eventually(lambda: op.probe("/readyz", 200), timeout=20)
    assert set(ready["checks"].values()) == {"ok"}
    ready_after = op.elapsed() - granted
    await op.probe("/healthz", 200)

    await custom.create_namespaced_custom_object(
        "asya.sh",
        "v1alpha1",
        kube_namespace,
        "asyas",
        asya_body("granted", scaling={"enabled": True}),
    )
    await eventually(lambda: _ready(custom, kube_namespace, "granted"))
    log.warning(
        "timings: not ready %.2fs, unhealthy %.2fs, ready %.2fs after the grant",
        not_ready,
        unhealthy,
        ready_after,
    )


def _matches_the_docs(body: dict[str, Any], namespace: str) -> None:
    """docs/operator.md's /readyz example has this answer's shape (it names the lease too: it
    shows a replica with leader election)."""
    text = (Path(__file__).resolve().parents[4] / "docs/operator.md").read_text()
    [example] = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]
    assert example.keys() == body.keys()
    documented = {k.replace("team-a/", f"{namespace}/") for k in example["checks"]} - {"lease"}
    assert documented <= set(body["checks"])
    prefix = example["checks"]["team-a/asyas"].split(" User ")[0]
    assert body["checks"][f"{namespace}/asyas"].startswith(prefix)


class Outage(TcpProxy):
    """asya-testing's proxy to the API server, which a test also takes down (connections
    refused, open ones cut: a watch sees its stream end mid-way) and brings back on its port."""

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self.cut()
            await self._server.wait_closed()
            self._server = None


async def test_api_server_down_is_not_ready_and_back_is_ready_and_reconciling(
    kube_control_plane: ControlPlane,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    amqp_url: str,
    eventually: Any,
) -> None:
    host, port = kube_control_plane.host.removeprefix("https://").rsplit(":", 1)
    proxy = Outage(host, int(port))
    await proxy.up()
    try:
        config = api_config(kube_control_plane, f"https://127.0.0.1:{proxy.port}")
        async with (
            client.ApiClient(config) as api,
            operating(settings(kube_namespace, amqp_url), api) as op,  # with the Lease
        ):
            await _down_and_up(op, proxy, kube_namespace, custom, asya_body, eventually)
    finally:
        await proxy.down()


async def _down_and_up(
    op: Running, proxy: Outage, kube_namespace: str, custom: Any, asya_body: Any, eventually: Any
) -> None:
    await eventually(lambda: op.probe("/readyz", 200), timeout=30)
    await custom.create_namespaced_custom_object(
        "asya.sh",
        "v1alpha1",
        kube_namespace,
        "asyas",
        asya_body("before", scaling={"enabled": True}),
    )
    await eventually(lambda: _ready(custom, kube_namespace, "before"))

    await proxy.down()
    down = op.elapsed()

    async def unreachable() -> dict[str, Any]:
        body = await op.probe("/readyz", 503)
        watch = body["checks"][f"{kube_namespace}/asyas"]
        assert watch.startswith("Unreachable: "), body
        return body

    await eventually(unreachable, timeout=10)
    not_ready = op.elapsed() - down
    await custom.create_namespaced_custom_object(  # the test's client goes direct
        "asya.sh",
        "v1alpha1",
        kube_namespace,
        "asyas",
        asya_body("during", scaling={"enabled": True}),
    )
    await proxy.up()
    up = op.elapsed()
    await eventually(lambda: op.probe("/readyz", 200), timeout=30)
    ready = op.elapsed() - up
    await eventually(lambda: _ready(custom, kube_namespace, "during"))
    await op.probe("/healthz", 200)
    log.warning("timings: not ready %.2fs after down, ready %.2fs after up", not_ready, ready)


async def _ready(custom: Any, ns: str, name: str) -> bool:
    obj = await custom.get_namespaced_custom_object("asya.sh", "v1alpha1", ns, "asyas", name)
    conds = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}
    return conds.get("Ready") == "True"
