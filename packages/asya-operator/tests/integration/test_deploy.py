"""deploy/ against a real kube-apiserver: the CRD accepts what it should and refuses the rest,
and every object of the rendered Helm chart passes a server-side dry run."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from asya_testing.kube import helm_template
from asya_testing.kube_fixtures import Rejected, server_side_apply

ROOT = Path(__file__).resolve().parents[4]
CHART = ROOT / "deploy/helm/asya"

VALID = {
    "apiVersion": "asya.sh/v1alpha1",
    "kind": "Asya",
    "metadata": {"name": "inference"},
    "spec": {
        "transport": {"urlSecretRef": {"name": "rabbitmq", "key": "url"}},
        "handler": "pipeline.steps:inference",
        "workload": {
            "template": {"spec": {"containers": [{"name": "asya-runtime", "image": "my/model:1"}]}}
        },
        "scaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 5},
    },
}


AMQ = "names starting with 'amq.' are reserved by RabbitMQ"


def render(namespace: str, *extra: str) -> list[dict[str, Any]]:
    return helm_template(CHART, *extra, namespace=namespace)


async def create_asya(api: Any, namespace: str, body: dict[str, Any]) -> Any:
    custom = client.CustomObjectsApi(api)
    return await custom.create_namespaced_custom_object(
        "asya.sh", "v1alpha1", namespace, "asyas", body
    )


async def test_valid_asya_is_accepted_with_defaults(kube_api: Any, kube_namespace: str) -> None:
    created = await create_asya(kube_api, kube_namespace, copy.deepcopy(VALID))
    spec = created["spec"]
    assert spec["workload"]["kind"] == "Deployment"
    assert spec["workload"]["replicas"] == 1
    assert spec["scaling"]["queueLength"] == 5
    assert spec["runtime"]["timeout"] == 300
    assert spec["retry"]["maxAttempts"] == 1
    assert spec["transport"]["exchange"] == "asya"


def _with(path: list[str], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


PLACED = {
    "runtime": {
        "startupTimeout": 600,
        "resources": {
            "cpu": "500m",
            "memory": "8Gi",
            "gpu": 1,
            "gpuResource": "example.com/fake-gpu",
        },
    },
    "scheduling": {
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}
                    ]
                }
            }
        },
        "runtimeClassName": "nvidia",
    },
}


async def test_resources_and_scheduling_are_accepted_as_written(
    kube_api: Any, kube_namespace: str
) -> None:
    body = copy.deepcopy(VALID)
    body["spec"].update(copy.deepcopy(PLACED))
    created = await create_asya(kube_api, kube_namespace, body)
    spec = created["spec"]
    assert spec["scheduling"] == PLACED["scheduling"]
    assert spec["runtime"]["resources"] == PLACED["runtime"]["resources"]  # no default filled in
    assert spec["runtime"]["startupTimeout"] == 600
    assert spec["runtime"]["timeout"] == 300


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_with(["spec", "scaling", "minReplicas"], 7), "minReplicas must be <= maxReplicas"),
        (
            _with(
                ["spec", "workload", "template", "spec", "containers"],
                [{"name": "asya-runtime"}, {"name": "asya-sidecar"}],
            ),
            "'asya-sidecar' is reserved",
        ),
        (
            _with(["spec", "workload", "template", "spec", "containers"], [{"name": "model"}]),
            "needs a container named 'asya-runtime'",
        ),
        (
            _with(["spec", "workload", "template", "spec", "volumes"], [{"name": "asya-socket"}]),
            "reserved for the runtime socket",
        ),
        (
            _with(
                ["spec", "workload", "volumeClaimTemplates"],
                [{"metadata": {"name": "data"}, "spec": {}}],
            ),
            "volumeClaimTemplates needs kind StatefulSet",
        ),
        (
            _with(["spec", "workload", "volumeClaimTemplates"], [{"spec": {}}]),
            "spec.workload.volumeClaimTemplates[0].metadata",
        ),
        (_with(["spec", "handler"], "not a handler"), "spec.handler"),
        (_with(["spec", "workload", "kind"], "DaemonSet"), "spec.workload.kind"),
        (_with(["spec", "scaling", "queueLength"], 0), "spec.scaling.queueLength"),
        (_with(["spec", "queue"], "amq space"), "spec.queue"),
        *(
            (_with(["spec", *path], name), f'spec.{".".join(path)}: Invalid value: "{name}": {AMQ}')
            for path, name in [
                (["queue"], "amq.foo"),
                (["transport", "exchange"], "amq.topic"),
                (["transport", "happyEnd"], "amq.done"),
                (["transport", "errorEnd"], "amq.failed"),
            ]
        ),
        (
            _with(["metadata", "name"], "amq.inference"),
            f"the queue defaults to the resource's name, and {AMQ}: set spec.queue",
        ),
        (_with(["spec", "runtime"], {"resources": {"gpu": -1}}), "spec.runtime.resources.gpu"),
        (
            _with(["spec", "runtime"], {"resources": {"cpu": "lots"}}),
            "spec.runtime.resources.cpu",
        ),
        (
            _with(["spec", "runtime"], {"resources": {"gpuResource": "example.com/fake-gpu"}}),
            "spec.runtime.resources: Invalid value: gpuResource needs gpu >= 1",
        ),
        (_with(["spec", "runtime"], {"startupTimeout": 0}), "spec.runtime.startupTimeout"),
        (
            _with(["spec", "scheduling"], {"tolerations": [{"operator": "Exists", "value": "v"}]}),
            "a toleration with operator Exists takes no value",
        ),
        (
            _with(["spec", "scheduling"], {"nodeSelector": {"pool": 1}}),
            "spec.scheduling.nodeSelector.pool",
        ),
        (
            _with(["spec", "scheduling"], {"runtimeClassName": "Not_A_Name"}),
            "spec.scheduling.runtimeClassName",
        ),
        (
            {
                **_with(["spec", "transport"], {"urlSecretRef": {"name": "r", "key": "u"}}),
                "spec": {k: v for k, v in VALID["spec"].items() if k != "handler"},
            },  # type: ignore[union-attr]
            "set handler",
        ),
    ],
)
async def test_invalid_asya_is_rejected(
    kube_api: Any, kube_namespace: str, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as info:
        await create_asya(kube_api, kube_namespace, body)
    assert info.value.status == 422
    assert message in json.loads(info.value.body)["message"]


async def test_rendered_chart_passes_server_side_dry_run(
    kube_api: Any, kube_namespace: str
) -> None:
    docs = render(kube_namespace)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    for doc in docs:
        applied = await server_side_apply(kube_api, doc)
        assert applied["kind"] == doc["kind"]
        assert applied["metadata"]["name"] == doc["metadata"]["name"]


async def test_dry_run_catches_a_field_the_api_server_rejects(
    kube_api: Any, kube_namespace: str
) -> None:
    """The check above can fail: a Deployment with a bad field is refused."""
    [deployment] = [
        d
        for d in render(kube_namespace)
        if d["metadata"]["name"] == "asya-operator" and d["kind"] == "Deployment"
    ]
    deployment["spec"]["replicas"] = -1
    deployment["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(Rejected) as info:
        await server_side_apply(kube_api, deployment)
    assert "spec.replicas" in str(info.value)
    assert "`selector` does not match template `labels`" in str(info.value)


def test_chart_without_gateway() -> None:
    kinds = {d["kind"] for d in render("x", "--set", "gateway.enabled=false")}
    assert "Service" not in kinds


def test_the_gateway_is_probed_for_readiness_and_liveness_apart() -> None:
    (dep,) = [
        d
        for d in render("x")
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "asya-gateway"
    ]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    (port,) = container["ports"]
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port["containerPort"]),
        "prometheus.io/path": "/metrics",
    }


@pytest.mark.parametrize("port", [None, 9090])
def test_the_operator_is_probed_on_its_probe_server(port: int | None) -> None:
    extra = ("--set", f"operator.httpPort={port}") if port else ()
    (dep,) = [
        d
        for d in render("x", *extra)
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "asya-operator"
    ]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ASYA_OPERATOR_HTTP_PORT"] == str(port or 8081)
    assert container["ports"] == [
        {"name": "http-probes", "containerPort": port or 8081, "protocol": "TCP"}
    ]
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "http-probes"}
    assert live["httpGet"] == {"path": "/healthz", "port": "http-probes"}
    # /healthz fails only after ASYA_OPERATOR_UNHEALTHY_AFTER: no initial delay needed, and a
    # restart comes within 30 s of that
    assert live["periodSeconds"] * live["failureThreshold"] <= 30
    assert ready["periodSeconds"] <= 10
    # Prometheus scrapes /metrics on the same port.
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port or 8081),
        "prometheus.io/path": "/metrics",
    }


def test_keda_crds_source() -> None:
    """Which KEDA CRDs the control plane got (the real ones when shared/ has them)."""
    from asya_testing.kube_fixtures import crd_documents

    names = {d["metadata"]["name"] for d in crd_documents(ROOT)}
    assert {
        "asyas.asya.sh",
        "scaledobjects.keda.sh",
        "scaledjobs.keda.sh",
        "triggerauthentications.keda.sh",
    } <= names
    if (ROOT / "../shared/third_party/keda-crds").is_dir():
        real = [d for d in crd_documents(ROOT) if d["metadata"]["name"] == "scaledobjects.keda.sh"]
        schema = real[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert "scaleTargetRef" in yaml.safe_dump(schema)
    assert os.environ.get("KUBEBUILDER_ASSETS")


async def test_operator_doc_example_is_accepted(kube_api: Any, kube_namespace: str) -> None:
    import re

    text = (ROOT / "docs/operator.md").read_text()
    examples = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    assert len(examples) >= 2
    for example in examples:
        example["metadata"]["namespace"] = kube_namespace
        applied = await server_side_apply(kube_api, example)
        assert applied["spec"]["transport"]["urlSecretRef"] == {"name": "rabbitmq", "key": "url"}
    assert examples[0]["spec"]["scaling"]["enabled"] is True


async def test_kind_harness_actors_are_accepted(kube_api: Any, kube_namespace: str) -> None:
    path = ROOT / "tests-e2e/kind/manifests/seed-actors.yaml"
    for doc in yaml.safe_load_all(path.read_text()):
        doc["metadata"]["namespace"] = kube_namespace
        applied = await server_side_apply(kube_api, doc)
        assert applied["spec"]["scaling"]["minReplicas"] == 0


async def test_chart_with_the_kind_values_passes_dry_run(
    kube_api: Any, kube_namespace: str
) -> None:
    docs = render(kube_namespace, "-f", str(ROOT / "tests-e2e/kind/values.yaml"))
    for doc in docs:
        await server_side_apply(kube_api, doc)
