from __future__ import annotations

from pathlib import Path

from asya_testing import run_python_blocks

ROOT = Path(__file__).resolve().parents[3]


def test_readme_examples_run() -> None:
    assert run_python_blocks(ROOT / "packages/asya-sidecar/README.md") == 1


def test_every_setting_is_documented() -> None:
    import re

    source = (ROOT / "packages/asya-sidecar/src/asya_sidecar/settings.py").read_text()
    used = set(re.findall(r'"(ASYA_[A-Z_]+)"', source))
    readme = (ROOT / "packages/asya-sidecar/README.md").read_text()
    documented = set(re.findall(r"`(ASYA_[A-Z_]+)`", readme))
    assert used == documented
