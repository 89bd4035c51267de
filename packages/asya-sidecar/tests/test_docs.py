from __future__ import annotations

from pathlib import Path

from asya_testing import run_python_blocks

ROOT = Path(__file__).resolve().parents[3]


def test_readme_examples_run() -> None:
    assert run_python_blocks(ROOT / "packages/asya-sidecar/README.md") == 1


def test_every_setting_is_documented() -> None:
    import re

    from asya_protocol.settings import env_names
    from asya_sidecar import SidecarSettings

    used = set(env_names(SidecarSettings))
    documented = set(
        re.findall(r"`(ASYA_[A-Z_]+)`", (ROOT / "packages/asya-sidecar/README.md").read_text())
    )
    assert used == documented
