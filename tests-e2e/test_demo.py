"""The README's first command: the seed pipeline on one machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples/seed/demo.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_seed_demo_prints_the_seed_result() -> None:
    proc = run_demo()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "Classified as greeting"
    assert any("inference" in line and "progress 50%" in line for line in lines)
    assert any("postprocess" in line and "done -> happy-end" in line for line in lines)


def test_seed_demo_other_text() -> None:
    proc = run_demo("this is a longer sentence")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "Classified as statement"


def test_readme_commands_and_ci_agree() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    block = readme[readme.index("```bash") + 1 : readme.index("```bash") + 3]
    demo, tests = (re.sub(r"\s+#.*$", "", line).strip() for line in block)
    assert demo.endswith("hatch run demo:seed")
    assert tests.endswith("hatch run test:all")
    assert tests in (ROOT / ".ci/run").read_text()
