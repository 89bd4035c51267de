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
import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
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
    kubeconfig: Path
    kubectl: Path
    helm: Path

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

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


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
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
        kubectl = Path(env["ASYA_CLUSTER_KUBECTL"])
        helm = Path(env["ASYA_CLUSTER_HELM"])
        _script("import", *IMAGES, timeout=900)
        yield Cluster(Path(env["KUBECONFIG"]), kubectl, helm)
    finally:
        _script("down", "--wipe", timeout=300)


@pytest.fixture(scope="module")
def chart(cluster: Cluster) -> Cluster:
    """The chart installed as a user would, with the Secrets it names."""
    amqp = os.environ.get("ASYA_TEST_AMQP_URL")
    database = os.environ.get("ASYA_TEST_DATABASE_URL")
    if not amqp or not database:
        unavailable("ASYA_TEST_AMQP_URL and ASYA_TEST_DATABASE_URL are needed (.ci/services.sh)")
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
    secrets = {
        "asya-rabbitmq": {"url": pod_url(amqp)},
        "asya-postgres": {"url": pod_url(database)},
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
        chart.wait_until(f"Asya {name} Ready", lambda n=name: ready(chart, n), timeout=180)
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

    service = chart.get("-n", NAMESPACE, "service", "asya-gateway")
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    called = subprocess.run(
        [sys.executable, str(CHECK), "--url", url, "--token", TOKEN],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert called.returncode == 0, called.stdout + called.stderr
    assert '"Classified as greeting"' in called.stdout.splitlines()[-1], called.stdout


def probe_actor(name: str) -> dict[str, Any]:
    """A seed actor under another name and queue, at zero replicas: no pod, only objects."""
    [doc] = [d for d in seed_actors() if d["metadata"]["name"] == "postprocess"]
    probe = copy.deepcopy(doc)
    probe["metadata"] = {"name": name}
    probe["spec"]["queue"] = name
    probe["spec"]["workload"]["replicas"] = 0
    return probe


def deployments(cluster: Cluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get("-n", NAMESPACE, "deployments")["items"]
    return items


def test_deleting_an_asya_garbage_collects_what_it_owned(chart: Cluster) -> None:
    """The real garbage collector removes the workload through its ownerReference."""
    chart.apply([probe_actor("gc-probe")])
    deployment = chart.wait_until(
        "gc-probe's Deployment",
        lambda: [
            d for d in deployments(chart)
            if any(o.get("name") == "gc-probe" for o in d["metadata"].get("ownerReferences", []))
        ],
        timeout=120,
    )[0]  # fmt: skip
    owner = deployment["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Asya"
    assert owner.get("controller") is True
    chart.run("-n", NAMESPACE, "delete", "asya", "gc-probe", "--wait=true", timeout=120)
    name = deployment["metadata"]["name"]
    chart.wait_until(
        f"Deployment {name} removed by the garbage collector",
        lambda: name not in {d["metadata"]["name"] for d in deployments(chart)},
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
        assert " 403" not in logs, logs[-3000:]
        assert "forbidden" not in logs.lower(), logs[-3000:]


def _unused(path: Path) -> None:  # keep Path imported for type checkers of helpers above
    del path


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


async def _publish(url: str, queue: str, payloads: list[dict[str, Any]]) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.confirm_delivery()
        for payload in payloads:
            body = {"route": {"steps": [queue], "current": 0}, "payload": payload}
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
    chart.wait_until(f"Asya {name} Ready", lambda: ready(chart, name), timeout=120)
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
    selector = "app.kubernetes.io/name=asya-operator"

    def operators() -> list[str]:
        pods = chart.get("-n", NAMESPACE, "pods", "-l", selector)["items"]
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
    chart.wait_until("the new leader reconciles", lambda: ready(chart, "after-handover"), 120)
    chart.run("-n", NAMESPACE, "delete", "asya", "after-handover", "--wait=true", timeout=120)
    print(f"lease handed over from {leader} to {new} in {handover:.1f} s")  # noqa: T201
