"""Resources, placement and the warm-up: the spec's first-class fields, rendered into the pod."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from asya_operator.builders import Actor, sidecar_container, workload
from asya_operator.model import AsyaSpec
from asya_operator.scheduling import STARTUP_PROBE_PERIOD, startup_probe
from asya_protocol.actor_settings import SidecarSettings
from asya_protocol.settings import load

RUNTIME: dict[str, Any] = {"name": "asya-runtime", "image": "my/model:1"}
BASE: dict[str, Any] = {
    "metadata": {"name": "llm", "namespace": "ml", "uid": "u-1", "generation": 1},
    "spec": {
        "transport": {"urlSecretRef": {"name": "rabbitmq", "key": "url"}},
        "handler": "pipeline.llm:Model.generate",
        "workload": {"template": {"spec": {"containers": [RUNTIME]}}},
    },
}


def actor(template_pod: dict[str, Any] | None = None, **spec: Any) -> Actor:
    obj = copy.deepcopy(BASE)
    obj["spec"].update(copy.deepcopy(spec))
    if template_pod is not None:
        obj["spec"]["workload"]["template"]["spec"].update(copy.deepcopy(template_pod))
    return Actor.from_resource(obj)


def pod_of(a: Actor) -> dict[str, Any]:
    pod: dict[str, Any] = workload(a)["spec"]["template"]["spec"]
    return pod


def runtime_of(a: Actor) -> dict[str, Any]:
    pod = pod_of(a)
    [runtime] = [c for c in pod.get("initContainers", []) + pod["containers"]
                 if c["name"] == "asya-runtime"]  # fmt: skip
    return runtime


def test_defaults_add_no_resources_and_no_placement() -> None:
    a = actor()
    assert "resources" not in runtime_of(a)
    pod = pod_of(a)
    for key in ("nodeSelector", "tolerations", "affinity", "runtimeClassName"):
        assert key not in pod
    assert a.spec.runtime.startup_timeout == 60
    assert a.spec.runtime.resources.gpu_resource_name == "nvidia.com/gpu"


def test_every_resource_field_is_rendered() -> None:
    a = actor(runtime={"resources": {"cpu": "500m", "memory": "8Gi", "gpu": 2}})
    assert runtime_of(a)["resources"] == {
        "requests": {"cpu": "500m", "memory": "8Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "8Gi", "nvidia.com/gpu": "2"},
    }


def test_a_configured_gpu_resource_name_is_asked_for() -> None:
    a = actor(runtime={"resources": {"gpu": 1, "gpuResource": "example.com/fake-gpu"}})
    assert runtime_of(a)["resources"] == {
        "requests": {"example.com/fake-gpu": "1"},
        "limits": {"example.com/fake-gpu": "1"},
    }


def test_zero_gpus_ask_for_none() -> None:
    assert "resources" not in runtime_of(actor(runtime={"resources": {"gpu": 0}}))


def test_resources_merge_key_by_key_over_the_template() -> None:
    template = {
        "containers": [
            {
                **RUNTIME,
                "resources": {
                    "requests": {"cpu": "1", "ephemeral-storage": "1Gi"},
                    "limits": {"cpu": "4", "memory": "1Gi"},
                },
            }
        ]
    }
    a = actor(template, runtime={"resources": {"cpu": "2", "memory": "4Gi"}})
    assert runtime_of(a)["resources"] == {
        "requests": {"cpu": "2", "ephemeral-storage": "1Gi", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "4Gi"},
    }
    # Without first-class fields the template's resources are passed through untouched.
    untouched = runtime_of(actor(template))["resources"]
    assert untouched == template["containers"][0]["resources"]


def test_a_job_runtime_gets_its_resources_too() -> None:
    a = actor(
        workload={**BASE["spec"]["workload"], "kind": "Job"}, runtime={"resources": {"gpu": 1}}
    )
    assert runtime_of(a)["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "startupProbe" not in sidecar_container(a)  # a Job's sidecar is not probed at all


TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def test_every_scheduling_field_is_rendered() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}
                ]
            }
        }
    }
    a = actor(
        scheduling={
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [TOLERATION, {"key": "spot", "value": "yes", "tolerationSeconds": 30}],
            "affinity": affinity,
            "runtimeClassName": "nvidia",
        }
    )
    pod = pod_of(a)
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [
        TOLERATION,
        {"key": "spot", "value": "yes", "tolerationSeconds": 30},
    ]
    assert pod["affinity"] == affinity
    assert pod["runtimeClassName"] == "nvidia"


def test_scheduling_merges_with_the_template() -> None:
    anti = {"preferredDuringSchedulingIgnoredDuringExecution": []}
    template = {
        "nodeSelector": {"pool": "cpu", "zone": "a"},
        "tolerations": [TOLERATION, {"key": "team", "operator": "Equal", "value": "nlp"}],
        "affinity": {"nodeAffinity": {"old": True}, "podAntiAffinity": anti},
        "runtimeClassName": "runc",
    }
    a = actor(
        template,
        scheduling={
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [TOLERATION, {"key": "spot", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"new": True}},
            "runtimeClassName": "nvidia",
        },
    )
    pod = pod_of(a)
    assert pod["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    assert pod["tolerations"] == [
        TOLERATION,
        {"key": "team", "operator": "Equal", "value": "nlp"},
        {"key": "spot", "operator": "Exists"},
    ]
    assert pod["affinity"] == {"nodeAffinity": {"new": True}, "podAntiAffinity": anti}
    assert pod["runtimeClassName"] == "nvidia"
    assert {k: pod_of(actor(template))[k] for k in template} == template


@pytest.mark.parametrize("timeout", [0.5, 1, 4.9, 5, 60, 61, 300, 86400])
def test_the_startup_probe_covers_the_whole_startup_timeout(timeout: float) -> None:
    probe = startup_probe(timeout)
    assert probe["periodSeconds"] == STARTUP_PROBE_PERIOD
    window = probe["failureThreshold"] * probe["periodSeconds"]
    # At least the sidecar's own wait, and no more than two periods beyond it.
    assert timeout + STARTUP_PROBE_PERIOD <= window < timeout + 2 * STARTUP_PROBE_PERIOD


def test_the_warm_up_is_rendered_into_the_sidecar() -> None:
    a = actor(runtime={"startupTimeout": 600})
    sidecar = sidecar_container(a)
    env = {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}
    assert env["ASYA_RUNTIME_WAIT"] == "600"
    assert load(SidecarSettings, env, rabbitmq_url="amqp://x/").runtime_wait == 600
    assert sidecar["startupProbe"] == {
        "httpGet": {"path": "/healthz", "port": "asya-http"},
        "periodSeconds": 5,
        "failureThreshold": 121,
    }
    # Liveness and readiness keep their own timing; the kubelet starts them after startup.
    assert sidecar["livenessProbe"]["failureThreshold"] == 3
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    default = sidecar_container(actor())
    assert {e["name"]: e.get("value") for e in default["env"]}["ASYA_RUNTIME_WAIT"] == "60"
    assert default["startupProbe"]["failureThreshold"] == 13


def _spec(**fields: Any) -> dict[str, Any]:
    return {"transport": BASE["spec"]["transport"], "handler": "a.b:c", **fields}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"runtime": {"resources": {"gpu": -1}}}, r"`\$\.runtime\.resources\.gpu`"),
        ({"runtime": {"resources": {"gpu": 65}}}, r"<= 64"),
        ({"runtime": {"resources": {"cpu": "lots"}}}, r"runtime\.resources\.cpu"),
        ({"runtime": {"resources": {"memory": "-1Gi"}}}, r"runtime\.resources\.memory"),
        ({"runtime": {"resources": {"cpu": 2}}}, r"Expected `str \| null`, got `int`"),
        (
            {"runtime": {"resources": {"gpuResource": "example.com/fake-gpu"}}},
            r"gpuResource needs runtime\.resources\.gpu >= 1",
        ),
        (
            {"runtime": {"resources": {"gpu": 0, "gpuResource": "example.com/fake-gpu"}}},
            r"gpuResource needs",
        ),
        ({"runtime": {"resources": {"gpu": 1, "gpuResource": "gpu"}}}, r"gpuResource"),
        ({"runtime": {"startupTimeout": 0}}, r"runtime\.startupTimeout"),
        ({"scheduling": {"runtimeClassName": "Not_A_Name"}}, r"runtimeClassName"),
        ({"scheduling": {"nodeSelector": {"pool": 1}}}, r"nodeSelector"),
        ({"scheduling": {"tolerations": [{"key": "k", "effect": "Never"}]}}, r"effect"),
        (
            {"scheduling": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
            r"operator Exists takes no value",
        ),
        ({"scheduling": {"tolerations": [{"value": "v"}]}}, r"without a key needs operator"),
        ({"scheduling": {"affinity": {"nodeAfinity": {}}}}, r"nodeAfinity"),
    ],
)
def test_bad_resources_and_scheduling_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(_spec(**fields), AsyaSpec)


@pytest.mark.parametrize("quantity", ["1", "500m", "0.5", ".5", "1.5Gi", "8G", "1e3", "100k"])
def test_kubernetes_quantities_are_accepted(quantity: str) -> None:
    spec = msgspec.convert(
        _spec(runtime={"resources": {"cpu": quantity, "memory": quantity}}), AsyaSpec
    )
    assert spec.runtime.resources.cpu == quantity
