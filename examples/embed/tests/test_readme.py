"""The README's Python example runs (the example's folder is on sys.path, see conftest.py)."""

from __future__ import annotations

from pathlib import Path

from asya_testing.docs import run_python_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run() -> None:
    assert run_python_blocks(README) == 1


def test_readme_runs_the_pipeline_file_and_the_tool_that_exist() -> None:
    text = README.read_text()
    assert "hatch run embed:asya dev examples/embed/pipeline.yaml" in text
    assert '"$(hatch env find embed)/bin/asya" call classify_text' in text
    assert "kubectl apply -f examples/embed/asya.yaml" in text
