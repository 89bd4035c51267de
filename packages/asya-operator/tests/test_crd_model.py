"""The CRD is generated from the model, and the committed copy in deploy/ is that output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from asya_operator.crd import crd, crd_yaml
from asya_operator.model import RESERVED_MESSAGE, AsyaSpec, WorkloadKind

QUEUE_FIELDS = ("exchange", "happyEnd", "errorEnd")

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "deploy/helm/asya/crds/asyas.asya.sh.yaml"


def test_committed_crd_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == crd_yaml(), (
        "deploy/helm/asya/crds is stale: run "
        "`python -m asya_operator crd > deploy/helm/asya/crds/asyas.asya.sh.yaml`"
    )


def test_cli_prints_the_crd() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asya_operator", "crd"], capture_output=True, text=True, check=True
    ).stdout
    assert out == crd_yaml()


def _walk(schema: object, path: str = "") -> list[str]:
    problems = []
    if isinstance(schema, dict):
        if "$ref" in schema or "anyOf" in schema or "$defs" in schema:
            problems.append(path)
        if "properties" in schema and schema.get("type") != "object":
            problems.append(f"{path}: properties without type object")
        if ("enum" in schema or "pattern" in schema) and "type" not in schema:
            problems.append(f"{path}: no type")
        for key, value in schema.items():
            problems += _walk(value, f"{path}.{key}")
    return problems


def test_schema_is_structural() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


def test_model_decodes_a_minimal_spec_with_defaults() -> None:
    spec = msgspec.convert(
        {
            "transport": {"urlSecretRef": {"name": "rmq", "key": "url"}},
            "handler": "pipeline.steps:inference",
            "workload": {"template": {"spec": {"containers": [{"name": "asya-runtime"}]}}},
        },
        AsyaSpec,
    )
    assert spec.workload.kind is WorkloadKind.DEPLOYMENT
    assert spec.scaling.queue_length == 5
    assert spec.transport.exchange == "asya"


@pytest.mark.parametrize(
    "bad",
    [
        {"scaling": {"maxReplicas": 0}},
        {"handler": "no colon"},
        {"queue": "has space"},
        {"workload": {"kind": "DaemonSet"}},
        {"unknownField": 1},
    ],
)
def test_model_rejects_bad_specs(bad: dict[str, object]) -> None:
    base: dict[str, object] = {"transport": {"urlSecretRef": {"name": "r", "key": "u"}}}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**base, **bad}, AsyaSpec)


_TRANSPORT = {"urlSecretRef": {"name": "r", "key": "u"}}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"queue": "amq.foo"}, r"queue 'amq\.foo': names starting with 'amq\.' are reserved"),
        (
            {"transport": {**_TRANSPORT, "exchange": "amq.topic"}},
            r"exchange 'amq\.topic': names starting with 'amq\.' are reserved",
        ),
        (
            {"transport": {**_TRANSPORT, "happyEnd": "amq.done"}},
            r"happyEnd 'amq\.done': names starting with 'amq\.' are reserved",
        ),
        (
            {"transport": {**_TRANSPORT, "errorEnd": "amq.failed"}},
            r"errorEnd 'amq\.failed': names starting with 'amq\.' are reserved",
        ),
    ],
)
def test_model_refuses_names_rabbitmq_reserves(bad: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"transport": _TRANSPORT, "handler": "pipeline.steps:inference"}
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert({**base, **bad}, AsyaSpec)


@pytest.mark.parametrize("name", ["amq", "amqp.x", "x.amq.y", "AMQ.x"])
def test_model_accepts_names_that_only_look_reserved(name: str) -> None:
    spec = msgspec.convert(
        {
            "transport": {**_TRANSPORT, "exchange": name, "happyEnd": name, "errorEnd": name},
            "queue": name,
            "handler": "pipeline.steps:inference",
        },
        AsyaSpec,
    )
    assert (spec.queue, spec.transport.exchange) == (name, name)


def test_every_queue_name_field_carries_the_reserved_prefix_rule() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    transport = spec["properties"]["transport"]["properties"]
    rule = {"rule": "!self.startsWith('amq.')", "message": RESERVED_MESSAGE}
    for field in (spec["properties"]["queue"], *(transport[k] for k in QUEUE_FIELDS)):
        assert field["x-kubernetes-validations"] == [rule]
