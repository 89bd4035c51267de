"""Every component's Dockerfile passes hadolint (threshold: warning) and runs as non-root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(
    [
        *ROOT.glob("packages/*/Dockerfile"),
        *ROOT.glob("examples/*/Dockerfile"),
        *ROOT.glob("tests-e2e/images/*/Dockerfile"),
    ]
)
HADOLINT = Path(sys.executable).parent / "hadolint"


def test_every_component_has_one() -> None:
    names = {p.parent.name for p in DOCKERFILES}
    assert names >= {"asya-runtime", "asya-sidecar", "asya-gateway", "asya-operator"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile: Path) -> None:
    proc = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "dockerfile",
    [d for d in DOCKERFILES if d.parent.parent.name == "packages"],
    ids=lambda p: p.parent.name,
)
def test_runs_as_numeric_non_root_user(dockerfile: Path) -> None:
    users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
    assert users, "no USER line"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
