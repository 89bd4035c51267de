from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from asya_protocol.vectors import load_vectors
from asya_testing import run_python_blocks

ROOT = Path(__file__).resolve().parents[3]


def _schema(which: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "asya_protocol", "schema", which],
        capture_output=True,
        text=True,
        check=True,
    )
    schema: dict[str, object] = json.loads(proc.stdout)
    return schema


def test_schema_command_prints_all() -> None:
    doc = _schema("all")
    assert set(doc) == {"envelope", "runtime"}


def test_valid_vectors_match_envelope_schema() -> None:
    validator = jsonschema.Draft202012Validator(_schema("envelope"))
    for vector in load_vectors("envelopes"):
        body = vector["input"]
        if vector["valid"]:
            validator.validate(json.loads(body))
        elif vector["error_kind"] == "route" and vector["name"] not in {
            "current-past-end"  # needs len(steps): beyond what JSON Schema can say
        }:
            assert not validator.is_valid(json.loads(body)), vector["name"]


def test_reply_vectors_match_runtime_schemas() -> None:
    runtime = _schema("runtime")
    kinds = {
        k: jsonschema.Draft202012Validator(runtime[k])
        for k in ("ok", "error", "progress", "partial")
    }
    for vector in load_vectors("replies"):
        if vector["kind"] in kinds:
            kinds[vector["kind"]].validate(json.loads(vector["body"]))


@pytest.mark.parametrize(
    "doc", ["packages/asya-protocol/README.md", "docs/protocol.md"], ids=lambda p: p
)
def test_doc_examples_run(doc: str) -> None:
    assert run_python_blocks(ROOT / doc) > 0
