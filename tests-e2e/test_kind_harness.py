"""The kind harness: here (no Docker engine) it must say so and exit 77, never pass; and what it
would apply must be valid."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests-e2e/kind/run.sh"


def _engine_answers() -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=20, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_preflight_is_honest() -> None:
    if _engine_answers():  # pragma: no cover - a machine with Docker runs the real thing
        return
    proc = subprocess.run(
        ["bash", str(HARNESS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ},
    )
    assert proc.returncode == 77, proc.stdout + proc.stderr
    assert "kind e2e: not run: missing" in proc.stderr
    assert "passed" not in proc.stdout


def test_manifests_parse_and_match_the_chart() -> None:
    services = list(
        yaml.safe_load_all((ROOT / "tests-e2e/kind/manifests/services.yaml").read_text())
    )
    secrets = {d["metadata"]["name"] for d in services if d["kind"] == "Secret"}
    values = yaml.safe_load((ROOT / "deploy/helm/asya/values.yaml").read_text())
    assert values["rabbitmq"]["urlSecret"]["name"] in secrets
    assert values["gateway"]["databaseSecret"]["name"] in secrets
    assert values["gateway"]["authSecret"]["name"] in secrets
    actors = list(
        yaml.safe_load_all((ROOT / "tests-e2e/kind/manifests/seed-actors.yaml").read_text())
    )
    assert [a["metadata"]["name"] for a in actors] == values["gateway"]["tools"]["tools"][0][
        "steps"
    ]
    assert all(a["spec"]["transport"]["urlSecretRef"]["name"] in secrets for a in actors)


def test_the_harness_runs_the_cluster_suite_with_every_variable_it_reads() -> None:
    """One set of tests, two ways to get a cluster: run.sh runs tests-e2e/cluster/ and sets
    every ASYA_CLUSTER_* variable the suite reads for a cluster from elsewhere."""
    harness = HARNESS.read_text()
    suite = (ROOT / "tests-e2e/cluster/test_cluster.py").read_text()
    assert "pytest tests-e2e/cluster" in harness
    read = set(re.findall(r"\b(ASYA_CLUSTER_[A-Z_]+)\b", suite)) - {
        "ASYA_CLUSTER_KUBECTL",  # scripts/cluster.sh's, for its own cluster
        "ASYA_CLUSTER_HELM",
        "ASYA_CLUSTER_DIR",
    }
    set_here = set(re.findall(r"^(ASYA_[A-Z_]+)=", harness, re.MULTILINE))
    assert read, "the suite reads no ASYA_CLUSTER_* variable: the check checks nothing"
    assert read <= set_here, f"run.sh does not set {sorted(read - set_here)}"
    assert "ASYA_TEST_AMQP_URL" in set_here


def test_the_preflight_checks_every_tool_the_harness_calls() -> None:
    harness = HARNESS.read_text()
    tools = re.search(r"^for tool in ([a-z0-9 ]+); do$", harness, re.MULTILINE)
    assert tools, "the preflight's tool loop is gone"
    checked = set(tools.group(1).split())
    after = harness.split("== building images", 1)[1]
    called = {
        t for t in ("docker", "kind", "kubectl", "helm", "hatch", "python3")
        if re.search(rf"(?:^|[|&(]|\$\()\s*{t} ", after, re.MULTILINE)
    }  # fmt: skip
    assert {"docker", "kind", "kubectl", "helm", "hatch"} <= called, called
    assert called <= checked, f"called but not checked first: {sorted(called - checked)}"
