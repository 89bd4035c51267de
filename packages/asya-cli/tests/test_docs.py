"""docs/cli.md and the README describe the command as it is: its commands, options, modules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from asya_cli.__main__ import app

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "packages/asya-cli"


def commands() -> dict[str, Any]:
    """The app's commands by name (typer's click group; typer may bring its own click)."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def sections(text: str) -> dict[str, str]:
    """``## `asya <name>` `` heading -> the text up to the next heading."""
    parts = re.split(r"^## `asya (\w+)`\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_command_has_its_section() -> None:
    documented = sections((ROOT / "docs/cli.md").read_text())
    assert set(documented) == set(commands())


def test_documented_options_exist() -> None:
    for name, text in sections((ROOT / "docs/cli.md").read_text()).items():
        options = {opt for p in commands()[name].params for opt in p.opts}
        mentioned = set(re.findall(r"`(--[a-z-]+)", text))
        assert mentioned, name
        assert mentioned <= options, (name, mentioned - options)


def test_the_readme_names_each_command_and_module() -> None:
    text = (PACKAGE / "README.md").read_text()
    for name in commands():
        assert f"`asya {name}" in text
    listed = set(re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE))
    modules = {p.stem for p in (PACKAGE / "src/asya_cli").glob("*.py")} - {"__init__", "__about__"}
    assert listed == modules
