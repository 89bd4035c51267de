"""The seed pipeline as containers: the images scripts/images.sh builds, run as podman pods wired
exactly as Kubernetes would run them.

The operator image runs as the Helm chart's operator pod against the test API server and
reconciles the seed's Asya resources (tests-e2e/kind/manifests/seed-actors.yaml); the Deployments
it stored there are read back and run as pods. The gateway's pod is the chart's rendered
Deployment, with its ConfigMap. ``asya_testing.podman.run_pod`` runs each pod spec: same images,
env names, paths, socket volume, users and security settings. RabbitMQ and PostgreSQL are the
test services on the host's 127.0.0.1, reached from the pods' own network namespaces through
slirp4netns.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from asya_testing import AmqpNames, fresh_database
from asya_testing.kube import ControlPlane, helm_template
from asya_testing.podman import HOST_LOOPBACK, Pod, podman, require_images, run_pod

ROOT = Path(__file__).resolve().parents[1]
SEED_ACTORS = ROOT / "tests-e2e/kind/manifests/seed-actors.yaml"
CHART = ROOT / "deploy/helm/asya"
STEPS = ("preprocess", "inference", "postprocess")
TOKEN = "container-e2e-token"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def version(package: str) -> str:
    about = ROOT / "packages" / package / "src" / package.replace("-", "_") / "__about__.py"
    found = re.search(r'__version__ = "(.+)"', about.read_text())
    assert found is not None
    return found.group(1)


IMAGES = {c: f"localhost/{c}:{version(c)}" for c in ("asya-sidecar", "asya-gateway")}
SEED_IMAGE = f"localhost/asya-seed:{version('asya-runtime')}"
RUNTIME_IMAGE = f"localhost/asya-runtime:{version('asya-runtime')}"
OPERATOR_IMAGE = f"localhost/asya-operator:{version('asya-operator')}"


@pytest.fixture(scope="module")
def images() -> None:
    require_images(*IMAGES.values(), SEED_IMAGE, RUNTIME_IMAGE, OPERATOR_IMAGE)


def from_pod(url: str) -> str:
    """``url`` (a service on the host's loopback) as a pod sees it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    assert host in ("127.0.0.1", "localhost"), f"expected a loopback service, got {url}"
    netloc = parts.netloc.rsplit("@", 1)
    netloc[-1] = netloc[-1].replace(host, HOST_LOOPBACK, 1)
    return urlunsplit(parts._replace(netloc="@".join(netloc)))


def render_chart(values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return helm_template(CHART, "--values", str(values_file))


def asya_resource(doc: dict[str, Any], names: AmqpNames) -> dict[str, Any]:
    """One seed Asya resource, on this test's queue and exchange names."""
    doc = copy.deepcopy(doc)
    spec = doc["spec"]
    spec["queue"] = names.queue(doc["metadata"]["name"])
    spec["transport"].update(
        exchange=names.exchange, happyEnd=names.happy_end, errorEnd=names.error_end
    )
    spec["sidecar"]["env"] = [{"name": "ASYA_EVENTS_EXCHANGE", "value": names.events_exchange}]
    return doc


KUBE_DIR = "/etc/asya-kube"  # where the operator's pod finds the kubeconfig below


def operator_kubeconfig(plane: ControlPlane, directory: Path) -> Path:
    """A directory with a kubeconfig for the test API server and the files it names, as the
    operator's pod sees them under ``KUBE_DIR``: what a service account's mounted credentials
    are to an operator in a cluster. Readable by the image's non-root user."""
    directory.mkdir(mode=0o755, exist_ok=True)
    for source, target in (
        (plane.ca_file, "ca.crt"),
        (plane.cert_file, "client.crt"),
        (plane.key_file, "client.key"),
    ):
        (directory / target).write_bytes(source.read_bytes())
        (directory / target).chmod(0o644)  # a throw-away test credential
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "envtest",
                "cluster": {"server": plane.host, "certificate-authority": f"{KUBE_DIR}/ca.crt"},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": f"{KUBE_DIR}/client.crt",
                    "client-key": f"{KUBE_DIR}/client.key",
                },
            }
        ],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "admin"}}],
        "current-context": "envtest",
    }
    (directory / "kubeconfig").write_text(yaml.safe_dump(config))
    (directory / "kubeconfig").chmod(0o644)
    return directory


async def stored_pod_specs(
    api: Any, namespace: str, names: list[str], operator: Pod
) -> dict[str, dict[str, Any]]:
    """The pod templates of the Deployments the operator made, as the API server stored them."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    apps = client.AppsV1Api(api)
    specs: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(90):
            while len(specs) < len(names):
                for name in names:
                    try:
                        dep = await apps.read_namespaced_deployment(name, namespace)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                        continue
                    specs[name] = api.sanitize_for_serialization(dep)["spec"]["template"]["spec"]
                if not await asyncio.to_thread(operator.running, "operator"):
                    logs = await asyncio.to_thread(operator.all_logs)
                    pytest.fail(f"the operator container exited; its log:\n{logs}")
                await asyncio.sleep(0.2)
    except TimeoutError:
        logs = await asyncio.to_thread(operator.all_logs)
        pytest.fail(f"the operator made {sorted(specs)} of {names}; its log:\n{logs}")
    return specs


@dataclass
class Cluster:
    url: str
    pods: dict[str, Pod] = field(default_factory=dict)


@pytest.fixture
async def cluster(
    images: None,
    amqp_url: str,
    amqp_names: AmqpNames,
    database_url: str,
    kube_control_plane: ControlPlane,
    kube_api: Any,
    kube_namespace: str,
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    """The operator image reconciles the seed's Asya resources on the test API server; the
    Deployments it stored run as podman pods, with the chart's gateway beside them."""
    from kubernetes_asyncio import client

    seed = list(yaml.safe_load_all(SEED_ACTORS.read_text()))
    assert [d["metadata"]["name"] for d in seed] == list(STEPS)
    suffix = amqp_names.suffix
    rename = {
        seed[0]["spec"]["workload"]["template"]["spec"]["containers"][0]["image"]: SEED_IMAGE,
        seed[0]["spec"]["sidecar"]["image"]: IMAGES["asya-sidecar"],
    }
    rendered = render_chart(
        {
            "operator": {"image": OPERATOR_IMAGE, "watchNamespaces": [kube_namespace]},
            "gateway": {
                "image": IMAGES["asya-gateway"],
                "tools": {
                    "tools": [
                        {
                            "name": "classify_text",
                            "description": "Classify a text",
                            "steps": [amqp_names.queue(s) for s in STEPS],
                            "timeout": 120,
                            "input_schema": {
                                "type": "object",
                                "properties": {"text": {"type": "string"}},
                                "required": ["text"],
                            },
                        }
                    ]
                },
                "env": [
                    {"name": "ASYA_RABBITMQ_EXCHANGE", "value": amqp_names.exchange},
                    {"name": "ASYA_HAPPY_END_QUEUE", "value": amqp_names.happy_end},
                    {"name": "ASYA_ERROR_END_QUEUE", "value": amqp_names.error_end},
                    {"name": "ASYA_EVENTS_EXCHANGE", "value": amqp_names.events_exchange},
                    {
                        "name": "ASYA_GATEWAY_EVENTS_QUEUE",
                        "value": amqp_names.queue("gateway-events"),
                    },
                ],
            },
        },
        tmp_path,
    )
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
    gateway = by_kind[("Deployment", "asya-gateway")]["spec"]["template"]["spec"]
    tools = by_kind[("ConfigMap", "asya-gateway-tools")]["data"]
    operator = by_kind[("Deployment", "asya-operator")]["spec"]["template"]["spec"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    custom = client.CustomObjectsApi(kube_api)
    for doc in seed:
        await custom.create_namespaced_custom_object(
            "asya.sh", "v1alpha1", kube_namespace, "asyas", asya_resource(doc, amqp_names)
        )
    kube_dir = operator_kubeconfig(kube_control_plane, tmp_path / "kube")
    async with fresh_database(database_url) as database:
        secrets = {
            ("rabbitmq", "url"): from_pod(amqp_url),  # the kind manifests' Secret
            tuple(values["rabbitmq"]["urlSecret"].values()): from_pod(amqp_url),
            tuple(values["gateway"]["databaseSecret"].values()): from_pod(database),
            tuple(values["gateway"]["authSecret"].values()): TOKEN,
        }
        cluster = Cluster(url="")
        try:
            # The chart's operator pod; host network: the API server listens on 127.0.0.1.
            cluster.pods["operator"] = await asyncio.to_thread(
                run_pod,
                f"asya-e2e-{suffix}-operator",
                operator,
                secrets={**secrets, ("asya-rabbitmq", "url"): amqp_url},
                env_overrides={"operator": {"KUBECONFIG": f"{KUBE_DIR}/kubeconfig"}},
                host_mounts={"operator": [(kube_dir, KUBE_DIR)]},
                namespace=kube_namespace,
                network="host",
            )
            specs = await stored_pod_specs(
                kube_api, kube_namespace, list(STEPS), cluster.pods["operator"]
            )
            for name, pod_spec in specs.items():
                cluster.pods[name] = await asyncio.to_thread(
                    run_pod,
                    f"asya-e2e-{suffix}-{name}",
                    pod_spec,
                    images=rename,
                    secrets=secrets,
                )
            cluster.pods["gateway"] = await asyncio.to_thread(
                run_pod,
                f"asya-e2e-{suffix}-gateway",
                gateway,
                secrets=secrets,
                config_maps={"asya-gateway-tools": tools},
            )
            for pod in cluster.pods.values():
                await asyncio.to_thread(pod.wait_ready, 90)
            port = cluster.pods["gateway"].host_port("gateway", "http")
            cluster.url = f"http://127.0.0.1:{port}"
            yield cluster
        finally:
            for pod in cluster.pods.values():
                await asyncio.to_thread(pod.remove)


async def test_the_operator_image_made_every_actor(
    cluster: Cluster, kube_api: Any, kube_namespace: str
) -> None:
    from kubernetes_asyncio import client

    custom = client.CustomObjectsApi(kube_api)
    scaled = await custom.list_namespaced_custom_object(
        "keda.sh", "v1alpha1", kube_namespace, "scaledobjects"
    )
    queues = {
        o["metadata"]["name"]: o["spec"]["triggers"][0]["metadata"]["queueName"]
        for o in scaled["items"]
    }
    assert set(queues) == set(STEPS)
    assert all(queue.startswith(f"{step}-") for step, queue in queues.items())
    apps = client.AppsV1Api(kube_api)
    for step in STEPS:
        dep = await apps.read_namespaced_deployment(step, kube_namespace)
        assert dep.metadata.owner_references[0].kind == "Asya"


async def test_mcp_call_through_the_container_pipeline(cluster: Cluster) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with (
        create_mcp_http_client(headers=AUTH) as http,
        Client(
            streamable_http_client(f"{cluster.url}/mcp", http_client=http)  # type: ignore[arg-type]
        ) as mcp,
        asyncio.timeout(120),
    ):
        result = await mcp.call_tool(
            "classify_text", {"text": "Hello world"}, progress_callback=on_progress
        )
    body = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert body["result"] == {"result": "Classified as greeting"}, cluster.pods[
        "gateway"
    ].all_logs()
    assert progress


async def test_stopping_a_runtime_container_mid_run_loses_nothing(cluster: Cluster) -> None:
    """While jobs keep arriving, SIGTERM the inference runtime container, leave it down for two
    seconds (work piles up in front of it), start it again as the kubelet restarts a container:
    every one of the 120 jobs succeeds, each with the right result."""
    pod = cluster.pods["inference"]
    texts = ["Hello world" if i % 2 == 0 else f"sentence number {i} is longer" for i in range(120)]
    ids: list[str] = []

    async with httpx.AsyncClient(base_url=cluster.url, headers=AUTH, timeout=30) as client:

        async def post_all() -> None:
            for text in texts:
                response = await client.post(
                    "/jobs", json={"tool": "classify_text", "arguments": {"text": text}}
                )
                assert response.status_code in (200, 201, 202), response.text
                ids.append(response.json()["id"])
                await asyncio.sleep(0.02)

        async def finished() -> list[dict[str, Any]]:
            jobs = [(await client.get(f"/jobs/{i}")).json() for i in list(ids)]
            return [j for j in jobs if j["status"] not in ("pending", "running")]

        poster = asyncio.create_task(post_all())
        try:
            async with asyncio.timeout(240):
                while True:  # poll until ten jobs have ended
                    if len(await finished()) >= 10:
                        break
                    await asyncio.sleep(0.1)
                assert not poster.done(), "every job was posted before the stop: raise the count"
                await asyncio.to_thread(pod.stop, "asya-runtime", 30)
                stop_code = await asyncio.to_thread(pod.exit_code, "asya-runtime")
                await asyncio.sleep(2)
                waiting = len(ids) - len(await finished())
                await asyncio.to_thread(pod.start, "asya-runtime")
                await poster
                while True:  # poll until every job has ended
                    if len(await finished()) == len(texts):
                        break
                    await asyncio.sleep(0.3)
        finally:
            poster.cancel()
            await asyncio.gather(poster, return_exceptions=True)
        jobs = [(await client.get(f"/jobs/{i}")).json() for i in ids]

    assert stop_code == 0, "the runtime container did not exit cleanly on SIGTERM"
    assert waiting > 0, "no job waited for the stopped runtime: nothing was tested"
    assert [j["status"] for j in jobs] == ["succeeded"] * len(texts), pod.all_logs()
    expected = [
        "Classified as greeting" if t == "Hello world" else "Classified as statement" for t in texts
    ]
    assert [j["result"]["result"] for j in jobs] == expected


@pytest.fixture(scope="module")
def operator_crd(images: None) -> str:
    return podman("run", "--rm", "--network", "none", OPERATOR_IMAGE, "crd")


def test_operator_image_generates_the_committed_crd(operator_crd: str) -> None:
    committed = (CHART / "crds/asyas.asya.sh.yaml").read_text()
    assert operator_crd == committed


@pytest.mark.parametrize("image", [*IMAGES.values(), RUNTIME_IMAGE, OPERATOR_IMAGE, SEED_IMAGE])
def test_image_runs_as_numeric_non_root_user(images: None, image: str) -> None:
    user = json.loads(podman("image", "inspect", "--format", "{{json .Config.User}}", image))
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert (
        podman("run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u").strip() == uid
    )


_LISTED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)", re.MULTILINE)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("image", [*IMAGES.values(), RUNTIME_IMAGE, OPERATOR_IMAGE, SEED_IMAGE])
def test_image_installs_exactly_the_locked_versions(images: None, image: str) -> None:
    """Every third-party distribution in the image is at a version requirements/lock.txt pins."""
    pins: dict[str, set[str]] = {}
    for name, pinned in _PIN.findall((ROOT / "requirements/lock.txt").read_text()):
        pins.setdefault(_normal(name), set()).add(pinned)
    installed = json.loads(
        podman("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", _LISTED)
    )
    names = {_normal(n): v for n, v in installed.items()}
    third_party = {n: v for n, v in names.items() if not n.startswith("asya-")}
    assert third_party, "no third-party distribution found: nothing was checked"
    unlocked = {n: v for n, v in third_party.items() if v not in pins.get(n, set())}
    assert not unlocked, f"{image} has versions the lock does not pin: {unlocked}"
