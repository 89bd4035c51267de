from __future__ import annotations

from pathlib import Path

from asya_testing import run_python_blocks

PACKAGE = Path(__file__).resolve().parents[1]


def test_readme_examples_run() -> None:
    assert run_python_blocks(PACKAGE / "README.md") >= 5
