"""The seed pipeline on a real kubelet: the chart's operator turns the seed's Asya resources into
Deployments whose pods (runtime + injected sidecar) run and pass their probes, and an MCP call
through the gateway's Service returns the pipeline's answer.

Scaling is off here (fixed replicas): KEDA on this cluster comes with the scale-to-zero tests.

A real single-node cluster (scripts/cluster.sh) with the Helm chart installed, for the suite.

The cluster is brought up once per session from nothing and wiped at the end: etcd, the API
server, controller-manager, scheduler, containerd, a real kubelet and kube-proxy on this host.
The project's images go from podman into the node's containerd. The chart runs the operator and
the gateway as pods with their ServiceAccounts (in-cluster config through the `kubernetes`
Service); pods reach the host's RabbitMQ and PostgreSQL through relays on the bridge address.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiormq
import pytest
import yaml

from asya_testing.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
CHART = ROOT / "deploy" / "helm" / "asya"
NAMESPACE = "asya"
TOKEN = "cluster-e2e-token"  # noqa: S105 - a test credential
GATEWAY_IP = "10.244.0.1"  # the bridge address: pods reach the host's services here


def version(package: str) -> str:
    about = ROOT / "packages" / package / "src" / package.replace("-", "_") / "__about__.py"
    found = re.search(r'__version__ = "(.+)"', about.read_text())
    assert found is not None
    return found.group(1)


def image(component: str) -> str:
    return f"localhost/{component}:{version(component)}"


SEED_IMAGE = f"localhost/asya-seed:{version('asya-runtime')}"
IMAGES = [
    *(image(c) for c in ("asya-operator", "asya-gateway", "asya-sidecar", "asya-runtime")),
    SEED_IMAGE,
]


def pod_url(url: str) -> str:
    """A 127.0.0.1 service URL as pods reach it: through the relay on the bridge address."""
    parts = urlsplit(url)
    netloc = parts.netloc.replace(parts.hostname or "", GATEWAY_IP, 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Cluster:
    """A cluster to test on, and how this test process and the cluster's pods reach things."""

    kubeconfig: Path
    kubectl: Path
    helm: Path
    amqp_pod_url: str
    """The broker as pods reach it (the test reaches it at ``ASYA_TEST_AMQP_URL``)."""
    database_pod_url: str
    storage_class: str | None
    """A StorageClass that provisions volumes; None: the test makes a local PersistentVolume."""
    local: bool
    """scripts/cluster.sh's cluster on this host (else one brought up elsewhere, e.g. kind)."""

    @contextlib.contextmanager
    def service_url(self, name: str) -> Iterator[str]:
        """An HTTP URL for a Service on 127.0.0.1: a ``kubectl port-forward`` (through the API
        server to the kubelet), listening before the URL is handed out."""
        port = self.get("-n", NAMESPACE, "service", name)["spec"]["ports"][0]["port"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local_port = probe.getsockname()[1]
        with (
            tempfile.TemporaryFile() as log,
            subprocess.Popen(
                [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), "-n", NAMESPACE,
                 "port-forward", "--address", "127.0.0.1", f"service/{name}",
                 f"{local_port}:{port}"],
                stdout=log, stderr=log,
            ) as forward,
        ):  # fmt: skip
            try:
                deadline = time.monotonic() + 60
                while True:
                    if forward.poll() is not None:
                        log.seek(0)
                        pytest.fail(f"port-forward exited: {log.read().decode(errors='replace')}")
                    with (
                        contextlib.suppress(OSError),
                        socket.create_connection(("127.0.0.1", local_port), timeout=1),
                    ):
                        break
                    if time.monotonic() > deadline:
                        pytest.fail("port-forward not listening after 60 s")
                    time.sleep(0.2)
                yield f"http://127.0.0.1:{local_port}"
            finally:
                forward.terminate()
                forward.wait(timeout=30)

    def load_tagged(self, source: str, tag: str) -> str:
        """``source`` under another tag, present on the node: built here and imported, or (a
        cluster from elsewhere) loaded beforehand and named by ``ASYA_CLUSTER_ROLLOUT_IMAGE``."""
        if not self.local:
            loaded = os.environ.get("ASYA_CLUSTER_ROLLOUT_IMAGE")
            if not loaded:
                unavailable("ASYA_CLUSTER_ROLLOUT_IMAGE: a second tag of the runtime image")
            return str(loaded)
        subprocess.run(["podman", "tag", source, tag], check=True, timeout=60)
        _script("import", tag, timeout=600)
        return tag

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def delete(self, *args: str, timeout: float = 300) -> None:
        """``kubectl delete --ignore-not-found`` for a test's ``finally``: bounded, and it never
        raises, so the test's own failure is what shows."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), "delete",
                 "--ignore-not-found", f"--timeout={max(int(timeout) - 10, 5)}s", *args],
                capture_output=True, timeout=timeout, check=False,
            )  # fmt: skip

    def get(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json"))

    def apply(self, docs: list[dict[str, Any]], namespace: str = NAMESPACE) -> None:
        self.run("-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def wait_until(self, what: str, check: Any, timeout: float = 120, every: float = 1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(every)
        pytest.fail(f"{what}: not true after {timeout} s (last: {last!r})")


def _script(*args: str, timeout: float) -> str:
    proc = subprocess.run(
        ["bash", str(CLUSTER_SH), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"scripts/cluster.sh {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _existing() -> Cluster:
    """A cluster brought up elsewhere (tests-e2e/kind/run.sh): its kubeconfig, kubectl and helm
    on PATH, the images loaded on its nodes, the services' URLs as its pods reach them."""
    needed = [
        "ASYA_CLUSTER_KUBECONFIG",
        "ASYA_CLUSTER_POD_AMQP_URL",
        "ASYA_CLUSTER_POD_DATABASE_URL",
    ]
    missing = [n for n in needed if not os.environ.get(n)]
    if missing:
        unavailable(f"a cluster from elsewhere needs {', '.join(missing)}")
    tools = {t: shutil.which(t) for t in ("kubectl", "helm")}
    if not all(tools.values()):
        unavailable(f"not on PATH: {[t for t, p in tools.items() if not p]}")
    return Cluster(
        kubeconfig=Path(os.environ["ASYA_CLUSTER_KUBECONFIG"]),
        kubectl=Path(str(tools["kubectl"])),
        helm=Path(str(tools["helm"])),
        amqp_pod_url=os.environ["ASYA_CLUSTER_POD_AMQP_URL"],
        database_pod_url=os.environ["ASYA_CLUSTER_POD_DATABASE_URL"],
        storage_class=os.environ.get("ASYA_CLUSTER_STORAGE_CLASS") or None,
        local=False,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """scripts/cluster.sh's cluster, up from nothing for the module and wiped after it; or, with
    ``ASYA_CLUSTER_KUBECONFIG``, a cluster brought up elsewhere (left as it is)."""
    amqp = os.environ.get("ASYA_TEST_AMQP_URL")
    database = os.environ.get("ASYA_TEST_DATABASE_URL")
    if not amqp:
        unavailable("ASYA_TEST_AMQP_URL is needed (.ci/services.sh, or a port-forward)")
    if os.environ.get("ASYA_CLUSTER_KUBECONFIG"):
        yield _existing()
        return
    if not database:
        unavailable("ASYA_TEST_DATABASE_URL is needed (.ci/services.sh)")
    if os.geteuid() != 0:
        unavailable("the cluster suite needs root (kubelet, containerd, the bridge)")
    missing = [
        i for i in IMAGES
        if subprocess.run(["podman", "image", "exists", i], check=False).returncode != 0
    ]  # fmt: skip
    if missing:
        unavailable(f"images missing: {missing} (sudo bash scripts/images.sh)")
    try:
        _script("up", timeout=1800)
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in _script("env", timeout=60).splitlines()
        )
        _script("import", *IMAGES, timeout=900)
        yield Cluster(
            kubeconfig=Path(env["KUBECONFIG"]),
            kubectl=Path(env["ASYA_CLUSTER_KUBECTL"]),
            helm=Path(env["ASYA_CLUSTER_HELM"]),
            amqp_pod_url=pod_url(amqp),
            database_pod_url=pod_url(str(database)),
            storage_class=None,
            local=True,
        )
    finally:
        _script("down", "--wipe", timeout=300)


@pytest.fixture(scope="module")
def chart(cluster: Cluster) -> Cluster:
    """The chart installed as a user would, with the Secrets it names."""
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
    secrets = {
        "asya-rabbitmq": {"url": cluster.amqp_pod_url},
        "asya-postgres": {"url": cluster.database_pod_url},
        "asya-gateway-auth": {"tokens": TOKEN},
    }
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n}, "stringData": data}
            for n, data in secrets.items()
        ]
    )
    values = {
        "operator": {"image": image("asya-operator"), "imagePullPolicy": "Never", "replicas": 2},
        "gateway": {"image": image("asya-gateway"), "imagePullPolicy": "Never", "replicas": 1},
    }
    proc = subprocess.run(
        [str(cluster.helm), "--kubeconfig", str(cluster.kubeconfig), "upgrade", "--install",
         "asya", str(CHART), "-n", NAMESPACE, "-f", str(ROOT / "tests-e2e/kind/values.yaml"),
         "-f", "-", "--wait", "--timeout", "180s"],
        input=yaml.safe_dump(values), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return cluster


SEED_ACTORS = ROOT / "tests-e2e/kind/manifests/seed-actors.yaml"
CHECK = ROOT / "tests-e2e/kind/check.py"
pytestmark = pytest.mark.timeout(900)


def seed_actors() -> list[dict[str, Any]]:
    """The seed's resources as a user on this cluster writes them: our images, fixed replicas."""
    docs = []
    for doc in yaml.safe_load_all(SEED_ACTORS.read_text()):
        spec = doc["spec"]
        spec["transport"].pop("managementUrlSecretRef", None)
        spec["transport"]["urlSecretRef"] = {"name": "asya-rabbitmq", "key": "url"}
        spec["scaling"] = {"enabled": False}
        spec["workload"]["replicas"] = 1
        spec["workload"]["template"]["spec"]["containers"][0]["image"] = SEED_IMAGE
        spec["sidecar"] = {"image": image("asya-sidecar"), "imagePullPolicy": "Never"}
        docs.append(doc)
    return docs


def ready(cluster: Cluster, name: str) -> bool:
    conditions = cluster.get("-n", NAMESPACE, "asya", name).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_ready(cluster: Cluster, name: str, timeout: float = 120) -> None:
    """Until the Asya is Ready; a failure names its Ready condition (reason and message)."""
    deadline = time.monotonic() + timeout
    while not ready(cluster, name):
        if time.monotonic() > deadline:
            conditions = cluster.get("-n", NAMESPACE, "asya", name).get("status", {})
            pytest.fail(f"Asya {name} not Ready after {timeout} s: {conditions.get('conditions')}")
        time.sleep(1)


def pods_running(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    pods = cluster.get("-n", NAMESPACE, "pods", "-l", selector)["items"]
    return [
        p for p in pods
        if p["status"].get("phase") == "Running"
        and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
        and len(p["status"].get("containerStatuses", [])) == 2
    ]  # fmt: skip


def test_seed_pipeline_runs_on_a_real_kubelet(chart: Cluster) -> None:
    started = time.monotonic()
    chart.apply(seed_actors())
    for name in ("preprocess", "inference", "postprocess"):
        wait_ready(chart, name, timeout=180)
        running = chart.wait_until(
            f"{name}'s pod Running with both containers ready (the kubelet ran their probes)",
            lambda n=name: pods_running(chart, f"asya.sh/actor={n}"),
            timeout=180,
        )
        names = {c["name"] for c in running[0]["spec"]["containers"]}
        assert names == {"asya-runtime", "asya-sidecar"}
    print(f"seed actors Ready with pods Running in {time.monotonic() - started:.1f} s")  # noqa: T201

    table = chart.run("-n", NAMESPACE, "get", "asyas")
    header = table.splitlines()[0].split()
    assert header[:5] == ["NAME", "QUEUE", "WORKLOAD", "READY", "REPLICAS"], table
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert {r[3] for r in rows.values()} == {"True"}, table

    with chart.service_url("asya-gateway") as url:
        called = subprocess.run(
            [sys.executable, str(CHECK), "--url", url, "--token", TOKEN],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert called.returncode == 0, called.stdout + called.stderr
    assert '"Classified as greeting"' in called.stdout.splitlines()[-1], called.stdout
    assert "progress" in called.stdout, "no progress notification reached the MCP client"


def probe_actor(name: str) -> dict[str, Any]:
    """A seed actor under another name and queue, at zero replicas: no pod, only objects."""
    [doc] = [d for d in seed_actors() if d["metadata"]["name"] == "postprocess"]
    probe = copy.deepcopy(doc)
    probe["metadata"] = {"name": name}
    probe["spec"]["queue"] = name
    probe["spec"]["workload"]["replicas"] = 0
    return probe


def owned_by(cluster: Cluster, name: str) -> list[str]:
    """``Kind/name`` of everything in the namespace whose controller owner is the Asya ``name``."""
    kinds = "deployments,statefulsets,services,scaledobjects.keda.sh,triggerauthentications.keda.sh"
    items = cluster.get("-n", NAMESPACE, kinds)["items"]
    return sorted(
        f"{i['kind']}/{i['metadata']['name']}" for i in items
        if any(o.get("kind") == "Asya" and o.get("name") == name and o.get("controller")
               for o in i["metadata"].get("ownerReferences", []))
    )  # fmt: skip


def test_deleting_an_asya_garbage_collects_what_it_owned(chart: Cluster) -> None:
    """The real garbage collector removes the workload, its Service, the ScaledObject (and with
    it KEDA's HPA) and the TriggerAuthentication, through their ownerReferences."""
    probe = probe_actor("gc-probe")
    probe["spec"]["workload"]["kind"] = "StatefulSet"
    probe["spec"]["scaling"] = {"enabled": True, "minReplicas": 0, "maxReplicas": 1}
    chart.apply([probe])
    expected = [
        "ScaledObject/gc-probe", "Service/gc-probe-headless", "StatefulSet/gc-probe",
        "TriggerAuthentication/gc-probe-rabbitmq",
    ]  # fmt: skip
    chart.wait_until("gc-probe's objects", lambda: owned_by(chart, "gc-probe") == expected, 120)
    chart.wait_until(
        "KEDA's HPA for it",
        lambda: "keda-hpa-gc-probe" in chart.run("-n", NAMESPACE, "get", "hpa", "-o", "name"),
        timeout=120,
    )  # fmt: skip
    chart.run("-n", NAMESPACE, "delete", "asya", "gc-probe", "--wait=true", timeout=120)
    chart.wait_until(
        "everything it owned removed by the garbage collector",
        lambda: owned_by(chart, "gc-probe") == []
        and "keda-hpa-gc-probe" not in chart.run("-n", NAMESPACE, "get", "hpa", "-o", "name"),
        timeout=120,
    )  # fmt: skip


def test_the_operator_uses_in_cluster_credentials(chart: Cluster) -> None:
    """The operator pods authenticate with their ServiceAccount token, not a kubeconfig."""
    pods = chart.get("-n", NAMESPACE, "pods", "-l", "app.kubernetes.io/name=asya-operator")
    assert len(pods["items"]) == 2
    for pod in pods["items"]:
        assert pod["spec"]["serviceAccountName"] == "asya-operator"
        env = [e.get("name") for c in pod["spec"]["containers"] for e in c.get("env", [])]
        assert "KUBECONFIG" not in env
        logs = chart.run("-n", NAMESPACE, "logs", pod["metadata"]["name"])
        assert not re.search(r"\b40[13]\b", logs), logs[-3000:]
        assert "forbidden" not in logs.lower(), logs[-3000:]


OPERATOR_PODS = "app.kubernetes.io/name=asya-operator"


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def operator_pods(cluster: Cluster) -> list[dict[str, Any]]:
    pods = cluster.get("-n", NAMESPACE, "pods", "-l", OPERATOR_PODS)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def probe_failures(cluster: Cluster, pod: str) -> list[str]:
    """The kubelet's readiness-probe failures recorded for ``pod`` (Unhealthy events)."""
    fields = f"involvedObject.name={pod},reason=Unhealthy"
    events = cluster.get("-n", NAMESPACE, "events", "--field-selector", fields)["items"]
    return [
        e.get("message", "") for e in events if "Readiness probe failed" in e.get("message", "")
    ]


def test_an_operator_without_its_rbac_is_not_ready_until_granted(chart: Cluster) -> None:
    """The operator's readiness says the truth on a real kubelet: with its ClusterRoleBinding
    gone, the replica holding the Lease cannot list Asyas and its /readyz answers 503 (the
    kubelet records the failures and keeps it out of Ready); granted again, it turns Ready
    with no restart."""
    chart.wait_until(
        "both operator pods Ready", lambda: sum(map(pod_ready, operator_pods(chart))) == 2
    )
    binding = chart.get("clusterrolebinding", "asya-operator")
    meta = binding["metadata"]
    saved = {
        "apiVersion": binding["apiVersion"],
        "kind": binding["kind"],
        "metadata": {
            "name": meta["name"],
            "labels": meta.get("labels", {}),
            "annotations": {
                k: v for k, v in meta.get("annotations", {}).items()
                if not k.startswith("kubectl.kubernetes.io/")
            },
        },
        "roleRef": binding["roleRef"],
        "subjects": binding["subjects"],
    }  # fmt: skip
    old = {p["metadata"]["name"] for p in operator_pods(chart)}
    try:
        chart.run("delete", "clusterrolebinding", "asya-operator")
        chart.run("-n", NAMESPACE, "delete", "pod", "-l", OPERATOR_PODS, "--wait=false")

        def refused_leader() -> str | None:
            holder = lease_holder(chart)
            pods = {p["metadata"]["name"]: p for p in operator_pods(chart)}
            if holder in old or holder not in pods or pod_ready(pods[holder]):
                return None
            failures = probe_failures(chart, holder)
            return holder if any("503" in f for f in failures) else None

        leader = chart.wait_until("the new leader refused by its readiness", refused_leader, 180)
        logs = chart.run("-n", NAMESPACE, "logs", leader)
        assert "Forbidden" in logs, logs[-3000:]
        time.sleep(10)  # it stays out of Ready while forbidden
        pods = {p["metadata"]["name"]: p for p in operator_pods(chart)}
        assert not pod_ready(pods[leader])
    finally:
        chart.apply([saved])
    granted = time.monotonic()

    def leader_ready() -> bool:
        pods = {p["metadata"]["name"]: p for p in operator_pods(chart)}
        return leader in pods and pod_ready(pods[leader])

    chart.wait_until("the leader Ready once granted", leader_ready, timeout=120, every=0.5)
    recovered = time.monotonic() - granted
    pod = chart.get("-n", NAMESPACE, "pod", leader)
    assert [c.get("restartCount", 0) for c in pod["status"]["containerStatuses"]] == [0]
    chart.apply([probe_actor("after-rbac")])
    wait_ready(chart, "after-rbac", timeout=120)  # and it reconciles
    chart.run("-n", NAMESPACE, "delete", "asya", "after-rbac", "--wait=true", timeout=120)
    chart.wait_until(
        "both operator pods Ready", lambda: sum(map(pod_ready, operator_pods(chart))) == 2
    )
    print(f"operator Ready {recovered:.1f} s after its RBAC came back, no restart")  # noqa: T201


# A handler shipped as a ConfigMap script: sleeps as asked, answers with a Secret's value.
SLEEPY = """\
import os
import time


def handler(payload):
    time.sleep(float(payload.get("sleep", 0)))
    return {"n": payload["n"], "secret": os.environ["SLEEPY_SECRET"]}
"""


def sleepy_actor(name: str, done: str) -> list[dict[str, Any]]:
    """ConfigMap handler, a Secret as env, KEDA from zero: everything a user's actor may use."""
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-code"},
         "data": {"sleepy.py": SLEEPY}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-secret"},
         "stringData": {"value": "from-a-secret"}},
        {
            "apiVersion": "asya.sh/v1alpha1",
            "kind": "Asya",
            "metadata": {"name": name},
            "spec": {
                "handlerScript": {"configMap": f"{name}-code", "key": "sleepy.py"},
                "transport": {
                    "urlSecretRef": {"name": "asya-rabbitmq", "key": "url"},
                    "happyEnd": done,
                },
                "workload": {"template": {"spec": {"containers": [{
                    "name": "asya-runtime",
                    "image": image("asya-runtime"),
                    "imagePullPolicy": "Never",
                    "env": [{"name": "SLEEPY_SECRET", "valueFrom": {
                        "secretKeyRef": {"name": f"{name}-secret", "key": "value"}}}],
                }]}}},
                "sidecar": {"image": image("asya-sidecar"), "imagePullPolicy": "Never"},
                "runtime": {"timeout": 120, "shutdownGrace": 60},
                "scaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 2,
                            "queueLength": 1, "pollingInterval": 1, "cooldownPeriod": 5},
            },
        },
    ]  # fmt: skip


async def _publish(
    url: str, queue: str, payloads: list[dict[str, Any]], ids: list[str] | None = None
) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.confirm_delivery()
        for i, payload in enumerate(payloads):
            body: dict[str, Any] = {"route": {"steps": [queue], "current": 0}, "payload": payload}
            if ids is not None:
                body["id"] = ids[i]
            await channel.basic_publish(
                json.dumps(body).encode(), exchange="asya", routing_key=queue,
                properties=aiormq.spec.Basic.Properties(delivery_mode=2),
            )  # fmt: skip
    finally:
        await connection.close()


async def _take(url: str, queue: str, count: int, timeout: float) -> list[dict[str, Any]]:
    connection = await aiormq.connect(url)
    got: list[dict[str, Any]] = []
    try:
        channel = await connection.channel()
        async with asyncio.timeout(timeout):
            while len(got) < count:
                message = await channel.basic_get(queue, no_ack=True)
                if message.body:
                    got.append(json.loads(message.body))
                else:
                    await asyncio.sleep(0.2)
    finally:
        await connection.close()
    return got


async def _drain(
    url: str,
    queue: str,
    *,
    quiet: float,
    timeout: float = 300,
    enough: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Everything on the queue until ``enough(got)`` holds (if given) and nothing more came for
    ``quiet`` seconds, or ``timeout`` passed: the caller asserts on what arrived."""
    connection = await aiormq.connect(url)
    got: list[dict[str, Any]] = []
    try:
        channel = await connection.channel()
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            message = await channel.basic_get(queue, no_ack=True)
            if message.body:
                got.append(json.loads(message.body))
                last = time.monotonic()
            elif (enough is None or enough(got)) and time.monotonic() - last >= quiet:
                break
            else:
                await asyncio.sleep(0.2)
    finally:
        await connection.close()
    return got


async def _depth(url: str, queue: str) -> int:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


def replicas(cluster: Cluster, name: str) -> int:
    deployment = cluster.get("-n", NAMESPACE, "deployment", name)
    return int(deployment["spec"].get("replicas", -1))


def actor_pods(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get(
        "-n", NAMESPACE, "pods", "-l", f"asya.sh/actor={name}"
    )["items"]
    return items


def test_scale_from_zero_and_back_with_a_configmap_handler(chart: Cluster) -> None:
    """minReplicas 0 starts no pod before work; a message scales it up (real KEDA, real HPA), the
    result comes back, idle scales it to zero; a long message in flight is not killed by it."""
    amqp = os.environ["ASYA_TEST_AMQP_URL"]
    name = f"sleepy-{uuid.uuid4().hex[:6]}"
    done = f"{name}-done"
    chart.apply(sleepy_actor(name, done))
    wait_ready(chart, name, timeout=120)
    # No pod at creation, and none in the seconds after (KEDA polls every second here).
    for _ in range(10):
        assert replicas(chart, name) == 0
        assert actor_pods(chart, name) == [], "a pod started before any work arrived"
        time.sleep(0.5)

    started = time.monotonic()
    asyncio.run(_publish(amqp, name, [{"n": 1}]))
    [first] = asyncio.run(_take(amqp, done, 1, timeout=180))
    from_zero = time.monotonic() - started
    assert first["payload"] == {"n": 1, "secret": "from-a-secret"}

    idle = time.monotonic()
    chart.wait_until("scaled back to zero", lambda: replicas(chart, name) == 0, timeout=180)
    to_zero = time.monotonic() - idle
    chart.wait_until("its pods gone", lambda: actor_pods(chart, name) == [], timeout=120)

    # A long message: KEDA (AMQP protocol) counts only ready messages, so once it is taken the
    # queue looks empty and the actor is scaled down while it runs. The sidecar drains on
    # SIGTERM (shutdownGrace 60 s), so it finishes, once.
    asyncio.run(_publish(amqp, name, [{"n": 2, "sleep": 25}]))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: asyncio.run(_take(amqp, done, 1, timeout=240)))
        chart.wait_until("scaled up for the long message", lambda: replicas(chart, name) >= 1, 180)
        chart.wait_until(
            "scaled down while the long message runs",
            lambda: replicas(chart, name) == 0 or waiting.done(), timeout=120,
        )  # fmt: skip
        scaled_down_in_flight = not waiting.done()
        results = waiting.result()
    assert scaled_down_in_flight, "no scale-down happened while the message ran: nothing tested"
    assert [r["payload"]["n"] for r in results] == [2]
    with pytest.raises(TimeoutError):
        asyncio.run(_take(amqp, done, 1, timeout=10))  # no second copy of it
    print(  # noqa: T201
        f"first result from zero in {from_zero:.1f} s; back to zero {to_zero:.1f} s after it"
    )


def lease_holder(cluster: Cluster) -> str:
    lease = cluster.get("-n", NAMESPACE, "lease", "asya-operator")
    return str(lease["spec"].get("holderIdentity") or "")


def test_two_operator_replicas_hand_over_the_lease(chart: Cluster) -> None:
    """One of the chart's two operator pods leads; deleting it hands over, and work goes on."""

    def operators() -> list[str]:
        pods = chart.get("-n", NAMESPACE, "pods", "-l", OPERATOR_PODS)["items"]
        return [
            p["metadata"]["name"] for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip

    chart.wait_until("two operator pods Running", lambda: len(operators()) == 2, timeout=120)
    leader = chart.wait_until("a leader", lambda: lease_holder(chart), timeout=60)
    assert leader in operators()
    started = time.monotonic()
    chart.run("-n", NAMESPACE, "delete", "pod", leader, "--wait=false")
    new = chart.wait_until(
        "another operator holds the lease",
        lambda: (h := lease_holder(chart)) and h != leader and h,
        timeout=90, every=0.2,
    )  # fmt: skip
    handover = time.monotonic() - started
    chart.apply([probe_actor("after-handover")])
    wait_ready(chart, "after-handover", timeout=120)  # the new leader reconciles
    chart.run("-n", NAMESPACE, "delete", "asya", "after-handover", "--wait=true", timeout=120)
    print(f"lease handed over from {leader} to {new} in {handover:.1f} s")  # noqa: T201


def condition(cluster: Cluster, name: str, kind: str) -> dict[str, Any]:
    conditions = cluster.get("-n", NAMESPACE, "asya", name).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def test_a_job_actor_runs_through_a_scaled_job(chart: Cluster) -> None:
    """kind: Job with scaling: KEDA starts Jobs on queue depth; each pod runs the runtime as a
    native sidecar, the sidecar exits when the queue is idle and the Job completes; the Asya's
    WorkloadReady follows the real Jobs."""
    amqp = os.environ["ASYA_TEST_AMQP_URL"]
    name = f"batch-{uuid.uuid4().hex[:6]}"
    done = f"{name}-done"
    docs = sleepy_actor(name, done)
    spec = docs[-1]["spec"]
    spec["workload"]["kind"] = "Job"
    spec["sidecar"]["env"] = [{"name": "ASYA_EXIT_WHEN_IDLE", "value": "3"}]
    spec["scaling"] = {"enabled": True, "minReplicas": 0, "maxReplicas": 2, "queueLength": 5,
                       "pollingInterval": 1}  # fmt: skip
    try:
        chart.apply(docs)
        wait_ready(chart, name, timeout=120)
        assert condition(chart, name, "WorkloadReady")["reason"] == "ScaledJob"

        def jobs() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = chart.get(
                "-n", NAMESPACE, "jobs", "-l", f"scaledjob.keda.sh/name={name}"
            )["items"]
            return items

        assert jobs() == [], "a Job started before any work arrived"
        asyncio.run(_publish(amqp, name, [{"n": i, "sleep": 2} for i in range(3)]))
        seen: set[str] = set()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(lambda: asyncio.run(_take(amqp, done, 3, timeout=240)))
            while not waiting.done():
                seen.add(condition(chart, name, "WorkloadReady").get("reason", ""))
                time.sleep(0.5)
            results = waiting.result()
        assert sorted(r["payload"]["n"] for r in results) == [0, 1, 2]
        assert "JobsRunning" in seen, seen

        started = jobs()
        assert started, "KEDA started no Job"
        pod = started[0]["spec"]["template"]["spec"]
        assert [(c["name"], c.get("restartPolicy")) for c in pod["initContainers"]] == [
            ("asya-runtime", "Always")
        ]
        assert [c["name"] for c in pod["containers"]] == ["asya-sidecar"]

        def all_complete() -> bool:
            return all(
                any(c["type"] == "Complete" and c["status"] == "True"
                    for c in j.get("status", {}).get("conditions", []))
                for j in jobs()
            )  # fmt: skip

        chart.wait_until("every Job Complete after its work", all_complete, timeout=180)
        after = chart.wait_until(
            "WorkloadReady back to ScaledJob with the succeeded Jobs counted",
            lambda: (c := condition(chart, name, "WorkloadReady")).get("reason") == "ScaledJob"
            and re.search(r"\b[1-9][0-9]* succeeded", c["message"]) and c,
            timeout=60,
        )  # fmt: skip
        assert after["status"] == "True"
        assert ready(chart, name)
        chart.run("-n", NAMESPACE, "delete", "asya", name, "--wait=true", timeout=120)
        chart.wait_until("its Jobs garbage collected", lambda: jobs() == [], timeout=120)
    finally:
        chart.delete("-n", NAMESPACE, "--wait=true", "asya", name, timeout=120)


# A handler that keeps what it is sent in a file on its volume, and answers with all of it.
KEEPER = """\
import pathlib
import socket

FILE = pathlib.Path("/data/words.txt")


def handler(payload):
    with FILE.open("a") as f:
        f.write(payload["word"] + "\\n")
    return {"words": FILE.read_text().split(), "pod": socket.gethostname()}
"""


def test_a_statefulset_actor_keeps_its_volume_across_a_pod_delete(chart: Cluster) -> None:
    """volumeClaimTemplates on a real StatefulSet: the claim binds a local PV, the pod writes to
    it, and the pod that replaces a deleted one sees the same data."""
    amqp = os.environ["ASYA_TEST_AMQP_URL"]
    name = f"keeper-{uuid.uuid4().hex[:6]}"
    done = f"{name}-done"
    storage: list[dict[str, Any]] = []
    host_dir: Path | None = None
    storage_class = chart.storage_class or "asya-local"
    if chart.storage_class is None:  # no provisioner here: a local PV on the node (this host)
        node = chart.get("nodes")["items"][0]["metadata"]["labels"]["kubernetes.io/hostname"]
        state = Path(os.environ.get("ASYA_CLUSTER_DIR", "/var/tmp/asya-cluster"))
        host_dir = state / "volumes" / name
        host_dir.mkdir(parents=True)
        host_dir.chmod(0o777)  # the runtime runs as uid 10001; a local PV keeps host permissions
        storage = [
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
             "metadata": {"name": storage_class}, "provisioner": "kubernetes.io/no-provisioner",
             "volumeBindingMode": "WaitForFirstConsumer"},
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{name}-pv"},
             "spec": {
                 "capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": storage_class,
                 "local": {"path": str(host_dir)},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
             }},
        ]  # fmt: skip
    docs = sleepy_actor(name, done)
    docs[0]["data"] = {"keeper.py": KEEPER}
    spec = docs[-1]["spec"]
    spec["handlerScript"]["key"] = "keeper.py"
    spec["scaling"] = {"enabled": False}
    workload = spec["workload"]
    workload["kind"] = "StatefulSet"
    workload["replicas"] = 1
    workload["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"}
    ]
    workload["volumeClaimTemplates"] = [
        {"metadata": {"name": "data"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                  "resources": {"requests": {"storage": "64Mi"}}}},
    ]  # fmt: skip
    try:
        if storage:
            chart.apply(storage, namespace="default")
        chart.apply(docs)
        wait_ready(chart, name, timeout=180)
        [first_pod] = chart.wait_until(
            "the StatefulSet's pod Running", lambda: pods_running(chart, f"asya.sh/actor={name}"),
            timeout=180,
        )  # fmt: skip
        claim = chart.get("-n", NAMESPACE, "pvc", f"data-{name}-0")
        assert claim["status"]["phase"] == "Bound"
        if host_dir is not None:
            assert claim["spec"]["volumeName"] == f"{name}-pv"

        asyncio.run(_publish(amqp, name, [{"word": "one"}]))
        [one] = asyncio.run(_take(amqp, done, 1, timeout=120))
        assert one["payload"] == {"words": ["one"], "pod": f"{name}-0"}
        if host_dir is not None:
            assert (host_dir / "words.txt").read_text() == "one\n"

        chart.run("-n", NAMESPACE, "delete", "pod", f"{name}-0", "--wait=true", timeout=120)
        uid = first_pod["metadata"]["uid"]
        chart.wait_until(
            "a new pod in its place, Running",
            lambda: [p for p in pods_running(chart, f"asya.sh/actor={name}")
                     if p["metadata"]["uid"] != uid],
            timeout=180,
        )  # fmt: skip
        asyncio.run(_publish(amqp, name, [{"word": "two"}]))
        [two] = asyncio.run(_take(amqp, done, 1, timeout=120))
        assert two["payload"] == {"words": ["one", "two"], "pod": f"{name}-0"}
        # A spec change rolls the pod (the sidecar's env changes); the operator's apply keeps the
        # StatefulSet's claims, so the rolled pod has the same claim and the same data.
        before = {p["metadata"]["uid"] for p in actor_pods(chart, name)}
        chart.run("-n", NAMESPACE, "patch", "asya", name, "--type=merge",
                  "-p", '{"spec":{"runtime":{"timeout":60}}}')  # fmt: skip
        chart.wait_until(
            "the spec change rolled out to a new pod, Ready",
            lambda: ready(chart, name)
            and condition(chart, name, "Ready").get("observedGeneration", 0) >= 2
            and [p for p in pods_running(chart, f"asya.sh/actor={name}")
                 if p["metadata"]["uid"] not in before],
            timeout=180,
        )  # fmt: skip
        again = chart.get("-n", NAMESPACE, "pvc", f"data-{name}-0")
        assert again["metadata"]["uid"] == claim["metadata"]["uid"]
        asyncio.run(_publish(amqp, name, [{"word": "three"}]))
        [three] = asyncio.run(_take(amqp, done, 1, timeout=120))
        assert three["payload"]["words"] == ["one", "two", "three"]
    finally:
        chart.delete("-n", NAMESPACE, "--wait=true", "asya", name, timeout=120)
        chart.delete("-n", NAMESPACE, "--wait=true", "pvc", f"data-{name}-0", timeout=120)
        if host_dir is not None:
            chart.delete("--wait=true", "pv", f"{name}-pv", timeout=60)
            shutil.rmtree(host_dir, ignore_errors=True)


class Stream:
    """Messages published at a steady rate in a thread, each with its own envelope id."""

    def __init__(self, url: str, queue: str, rate: float) -> None:
        self.url, self.queue, self.rate = url, queue, rate
        self.sent: list[int] = []
        self._stopping = False
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.future: concurrent.futures.Future[None] | None = None

    def id_of(self, n: int) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.queue}/{n}"))

    async def _run(self) -> None:
        connection = await aiormq.connect(self.url)
        try:
            channel = await connection.channel()
            await channel.confirm_delivery()
            n = 0
            while not self._stopping:
                body = {"id": self.id_of(n), "route": {"steps": [self.queue], "current": 0},
                        "payload": {"n": n, "sleep": 0.02}}  # fmt: skip
                await channel.basic_publish(
                    json.dumps(body).encode(), exchange="asya", routing_key=self.queue,
                    properties=aiormq.spec.Basic.Properties(delivery_mode=2),
                )  # fmt: skip
                self.sent.append(n)
                n += 1
                await asyncio.sleep(1 / self.rate)
        finally:
            await connection.close()

    def __enter__(self) -> Stream:
        self.future = self.pool.submit(lambda: asyncio.run(self._run()))
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._stopping = True
        assert self.future is not None
        try:
            self.future.result(timeout=60)
        except Exception:
            if exc_type is None:  # the body's own failure, if any, is the one to show
                raise
        finally:
            self.pool.shutdown(wait=False)


def test_killing_a_pod_and_rolling_out_a_new_image_lose_nothing(chart: Cluster) -> None:
    """A steady stream through a two-pod actor while one pod is force-deleted and then a new
    image tag rolls out: every message's result arrives, and a message seen twice (redelivered
    after a kill) carries its own id both times."""
    amqp = os.environ["ASYA_TEST_AMQP_URL"]
    name = f"steady-{uuid.uuid4().hex[:6]}"
    done = f"{name}-done"
    new_tag = chart.load_tagged(image("asya-runtime"), f"localhost/asya-runtime:rollout-{name}")
    docs = sleepy_actor(name, done)
    spec = docs[-1]["spec"]
    spec["scaling"] = {"enabled": False}
    spec["workload"]["replicas"] = 2
    spec["runtime"] = {"timeout": 30, "shutdownGrace": 20}
    selector = f"asya.sh/actor={name}"
    try:
        chart.apply(docs)
        chart.wait_until("two pods Running", lambda: len(pods_running(chart, selector)) == 2, 180)
        results: list[dict[str, Any]] = []
        with Stream(amqp, name, rate=20) as stream:
            chart.wait_until(
                "results flowing", lambda: asyncio.run(_depth(amqp, done)) > 20, timeout=120
            )
            victim = pods_running(chart, selector)[0]["metadata"]["name"]
            chart.run("-n", NAMESPACE, "delete", "pod", victim, "--grace-period=0", "--force")
            chart.wait_until(
                "a replacement pod Running",
                lambda: len([p for p in pods_running(chart, selector)
                             if p["metadata"]["name"] != victim]) == 2,
                timeout=180,
            )  # fmt: skip
            patch = [{"op": "replace",
                      "path": "/spec/workload/template/spec/containers/0/image",
                      "value": new_tag}]  # fmt: skip
            chart.run(
                "-n", NAMESPACE, "patch", "asya", name, "--type=json", "-p", json.dumps(patch)
            )

            def rolled_out() -> bool:
                pods = pods_running(chart, selector)
                images = {
                    c["image"] for p in chart.get("-n", NAMESPACE, "pods", "-l", selector)["items"]
                    for c in p["spec"]["containers"] if c["name"] == "asya-runtime"
                }  # fmt: skip
                return len(pods) == 2 and images == {new_tag}

            chart.wait_until("the new image rolled out", rolled_out, timeout=240)
            time.sleep(3)  # the stream goes on through the new pods
        sent = list(stream.sent)
        wanted = set(sent)
        results = asyncio.run(
            _drain(amqp, done, quiet=5, timeout=240,
                   enough=lambda got: wanted <= {r["payload"]["n"] for r in got})
        )  # every result, then any duplicates still coming  # fmt: skip
        by_n: dict[int, list[str]] = {}
        for r in results:
            by_n.setdefault(r["payload"]["n"], []).append(r["id"])
        assert sorted(by_n) == sent, f"lost: {sorted(set(sent) - set(by_n))}"
        for n, ids in by_n.items():
            assert set(ids) == {stream.id_of(n)}, (n, ids)
        duplicates = len(results) - len(sent)
        print(  # noqa: T201
            f"{len(sent)} messages through a pod kill and a rollout: "
            f"0 lost, {duplicates} duplicates"
        )
    finally:
        chart.delete("-n", NAMESPACE, "--wait=true", "asya", name, timeout=120)


@pytest.mark.timeout(1200)
def test_fifty_asyas_at_once(chart: Cluster) -> None:
    """50 Asya resources applied in one go: all Ready with their pods Running."""
    names = [f"many-{i:02d}" for i in range(50)]
    docs = []
    for name in names:
        doc = probe_actor(name)
        doc["spec"]["workload"]["replicas"] = 1
        doc["spec"]["deleteQueueOnDelete"] = True
        docs.append(doc)
    started = time.monotonic()
    try:
        chart.apply(docs)

        def all_ready() -> bool:
            items = chart.get("-n", NAMESPACE, "asyas")["items"]
            ok = {
                i["metadata"]["name"] for i in items
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in i.get("status", {}).get("conditions", []))
            }  # fmt: skip
            return set(names) <= ok

        chart.wait_until("50 Asyas Ready", all_ready, timeout=600, every=2)
        ready_at = time.monotonic() - started
        running = pods_running(chart, "asya.sh/actor")
        assert {p["metadata"]["labels"]["asya.sh/actor"] for p in running} >= set(names)
        print(f"50 Asyas Ready with pods Running in {ready_at:.1f} s")  # noqa: T201
    finally:
        chart.delete("-n", NAMESPACE, "--wait=true", "--timeout=300s", "asya", *names, timeout=360)


FAKE_GPU = "example.com/fake-gpu"
FAKE_GPU_PATH = "/status/{}/" + FAKE_GPU.replace("~", "~0").replace("/", "~1")


def advertise(cluster: Cluster, node: str, count: int | None, field: str = "capacity") -> None:
    """Set the node's fake extended resource to ``count`` (None: remove it), as a device plugin
    would; the kubelet copies capacity into allocatable, which the scheduler counts."""
    op: dict[str, str] = {"op": "remove", "path": FAKE_GPU_PATH.format(field)}
    if count is not None:
        op.update(op="add", value=str(count))
    cluster.run(
        "patch", "node", node, "--subresource=status", "--type=json", "-p", json.dumps([op])
    )


def gpu_actor(name: str) -> dict[str, Any]:
    """An always-on actor (one replica) asking for one fake GPU."""
    doc = probe_actor(name)
    doc["spec"]["workload"]["replicas"] = 1
    doc["spec"]["deleteQueueOnDelete"] = True
    doc["spec"].setdefault("runtime", {})["resources"] = {"gpu": 1, "gpuResource": FAKE_GPU}
    return doc


def unschedulable(cluster: Cluster, pod: dict[str, Any]) -> str | None:
    """The scheduler's FailedScheduling message for a Pending pod, once it has written one."""
    name = pod["metadata"]["name"]
    events = cluster.get(
        "-n", NAMESPACE, "events",
        "--field-selector", f"involvedObject.name={name},reason=FailedScheduling",
    )["items"]  # fmt: skip
    messages = [e.get("message") or e.get("note", "") for e in events]
    return next((m for m in messages if FAKE_GPU in m), None)


def test_a_gpu_actor_is_scheduled_against_the_node_extended_resource(chart: Cluster) -> None:
    """One fake GPU on the node, two actors asking for one each: one runs on it, the other
    stays Pending, the scheduler naming the resource (Insufficient example.com/fake-gpu)."""
    node = next(
        n["metadata"]["name"] for n in chart.get("nodes")["items"]
        if not n["spec"].get("unschedulable")
        and not any(t.get("effect") == "NoSchedule" for t in n["spec"].get("taints", []))
    )  # fmt: skip
    names = ["gpu-a", "gpu-b"]
    try:
        advertise(chart, node, 1)
        chart.wait_until(
            f"{FAKE_GPU}: 1 allocatable on {node}",
            lambda: chart.get("node", node)["status"].get("allocatable", {}).get(FAKE_GPU) == "1",
            timeout=60,
        )
        chart.apply([gpu_actor(n) for n in names])

        def placed() -> tuple[str, str, str] | None:
            pods = {n: chart.get("-n", NAMESPACE, "pods", "-l", f"asya.sh/actor={n}")["items"]
                    for n in names}  # fmt: skip
            if any(len(p) != 1 for p in pods.values()):
                return None
            running = [n for n in names if pods_running(chart, f"asya.sh/actor={n}")]
            pending = [n for n in names if pods[n][0]["status"].get("phase") == "Pending"]
            if len(running) != 1 or len(pending) != 1:
                return None
            message = unschedulable(chart, pods[pending[0]][0])
            return (running[0], pending[0], message) if message else None

        ran, waits, message = chart.wait_until(
            "one GPU actor Running, the other Pending for the GPU", placed, timeout=240, every=2
        )
        [pod] = chart.get("-n", NAMESPACE, "pods", "-l", f"asya.sh/actor={ran}")["items"]
        [runtime] = [c for c in pod["spec"]["containers"] if c["name"] == "asya-runtime"]
        assert runtime["resources"]["limits"][FAKE_GPU] == "1"
        assert pod["spec"]["nodeName"] == node
        assert f"Insufficient {FAKE_GPU}" in message, message
        [pending] = chart.get("-n", NAMESPACE, "pods", "-l", f"asya.sh/actor={waits}")["items"]
        scheduled = next(c for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
        assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    finally:
        chart.delete("-n", NAMESPACE, "--wait=true", "asya", *names, timeout=180)
        for field in ("capacity", "allocatable"):  # the kubelet may have dropped the second
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                advertise(chart, node, None, field)
