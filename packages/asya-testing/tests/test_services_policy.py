"""The skip/fail policy of the service fixtures, checked in a child pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asya_testing import in_ci

CHILD_TEST = """
def test_needs_broker(amqp_url):
    assert amqp_url
"""


def _run_child(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_child.py").write_text(CHILD_TEST)
    ini = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(ini)
    env = {k: v for k, v in os.environ.items() if k not in ("ASYA_TEST_AMQP_URL", "CI")}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )


def test_without_service_skips_locally(tmp_path: Path) -> None:
    proc = _run_child(tmp_path, ci=None)
    assert "1 skipped" in proc.stdout, proc.stdout
    assert "ASYA_TEST_AMQP_URL is not set" in proc.stdout


def test_without_service_fails_in_ci(tmp_path: Path) -> None:
    proc = _run_child(tmp_path, ci="true")
    assert proc.returncode != 0
    assert "CI is set, so this is a failure" in proc.stdout, proc.stdout


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("", False)])
def test_in_ci(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected
