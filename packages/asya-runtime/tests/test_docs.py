from __future__ import annotations

from pathlib import Path

from asya_testing import run_python_blocks

PACKAGE = Path(__file__).resolve().parents[1]


def test_readme_examples_run() -> None:
    assert run_python_blocks(PACKAGE / "README.md") >= 5


def test_every_setting_is_documented() -> None:
    import re

    from asya_protocol.settings import env_names
    from asya_runtime import RuntimeSettings

    used = set(env_names(RuntimeSettings))
    documented = set(re.findall(r"`(ASYA_[A-Z_]+)`", (PACKAGE / "README.md").read_text()))
    assert used <= documented
