"""The package layering, enforced: which package's source may import which.

asya-protocol is the bottom and imports no other Asya package; the runtime, the sidecar, the
gateway, the operator and the test helpers build on it alone; only the CLI, which runs a whole
pipeline on one machine, imports the runtime, the sidecar and the gateway. Every import of
another Asya package must also be a declared dependency in that package's pyproject.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, set[str]] = {
    "asya_protocol": set(),
    "asya_runtime": {"asya_protocol"},
    "asya_sidecar": {"asya_protocol"},
    "asya_gateway": {"asya_protocol"},
    "asya_operator": {"asya_protocol"},
    "asya_testing": {"asya_protocol"},
    "asya_cli": {"asya_protocol", "asya_runtime", "asya_sidecar", "asya_gateway"},
}


def imported_packages(source: Path, own: str, root: Path = ROOT) -> dict[str, str]:
    """Other ``asya_*`` packages imported anywhere under ``source``: name -> first file:line."""
    found: dict[str, str] = {}
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top.startswith("asya_") and top != own:
                    found.setdefault(top, f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_package_is_in_the_table() -> None:
    packages = {p.name for p in ROOT.glob("packages/*/src/asya_*") if p.is_dir()}
    assert packages == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_layers(package: str) -> None:
    source = ROOT / "packages" / package.replace("_", "-") / "src" / package
    found = imported_packages(source, package)
    upward = {name: where for name, where in found.items() if name not in ALLOWED[package]}
    assert not upward, f"{package} may import only {sorted(ALLOWED[package])}; found {upward}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imported_packages_are_declared(package: str) -> None:
    directory = ROOT / "packages" / package.replace("_", "-")
    project = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
    declared = {
        dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().replace("-", "_")
        for dep in project.get("dependencies", [])
    }
    found = imported_packages(directory / "src" / package, package)
    missing = sorted(set(found) - declared)
    assert not missing, f"{package} imports {missing} without declaring them"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    fake = tmp_path / "asya_protocol"
    fake.mkdir()
    (fake / "bad.py").write_text("from asya_gateway.jobs import JobStore\nimport asya_protocol\n")
    assert list(imported_packages(fake, "asya_protocol", tmp_path)) == ["asya_gateway"]
