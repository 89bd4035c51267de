"""The kind harness: here (no Docker engine) it must say so and exit 77, never pass; and what it
would apply must be valid."""

from __future__ import annotations

import os
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
