"""Each package's wheel, installed alone in a fresh venv WITHOUT the lock, imports and runs.

The project's environments and images use requirements/lock.txt; users who
``pip install asya-<component>`` get the newest versions its ranges allow. These tests install
what such a user gets, so a release that breaks our ranges fails here before a user sees it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())

CRD = ROOT / "deploy/helm/asya/crds/asyas.asya.sh.yaml"
# Every module is imported: a submodule that needs an undeclared dependency fails too.
IMPORT_ALL = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(package.__name__, package.__version__, len(names), "modules")
"""


def unlocked_env() -> dict[str, str]:
    """This process's environment without the lock (and any other uv or pip setting)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV", "PIP_"))}


def own_versions() -> list[str]:
    """``name==version`` for each of our packages: resolved from the wheels, never the index."""
    pins = []
    for package in PACKAGES:
        about = (package / "src" / package.name.replace("-", "_") / "__about__.py").read_text()
        version = re.search(r'__version__ = "([^"]+)"', about)
        assert version is not None
        pins.append(f"{package.name}=={version.group(1)}")
    return pins


def venv_with(uv: str, where: Path, wheels: Path, *requirements: str) -> Path:
    constraints = where / "own-packages.txt"
    constraints.write_text("\n".join(own_versions()) + "\n")
    env = unlocked_env()
    subprocess.run([uv, "venv", "-q", str(where / "venv")], check=True, env=env, timeout=120)
    python = where / "venv" / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), "--no-config", "--find-links",
         str(wheels), "--constraint", str(constraints), *requirements],
        check=True, env=env, timeout=600,
    )  # fmt: skip
    return python


@pytest.mark.timeout(900)
@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_wheel_alone_unlocked_imports_and_runs(
    package: Path, uv: str, wheels: Path, tmp_path: Path
) -> None:
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    extras = sorted(project.get("optional-dependencies", {}))
    target = f"{package.name}[{','.join(extras)}]" if extras else package.name
    python = venv_with(uv, tmp_path, wheels, target)
    module = package.name.replace("-", "_")
    imported = subprocess.run(
        [str(python), "-c", IMPORT_ALL, module],
        capture_output=True, text=True, env=unlocked_env(), timeout=300, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    for script in project.get("scripts", {}):
        shown = subprocess.run(
            [str(python.parent / script), "--help"],
            capture_output=True, text=True, env=unlocked_env(), timeout=120, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, f"{script} --help: {shown.stderr}"
        assert "usage" in shown.stdout.lower(), shown.stdout


def _oldest_allowed(package: str, dependency: str) -> str:
    project = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        if requirement.name == dependency:
            [lower] = [s.version for s in requirement.specifier if s.operator == ">="]
            return lower
    raise AssertionError(f"{package} does not depend on {dependency}")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_crd_is_the_same_bytes_whatever_msgspec(
    which: str, uv: str, wheels: Path, tmp_path: Path
) -> None:
    """``python -m asya_operator crd`` depends on the model only, not on msgspec's version."""
    oldest = _oldest_allowed("asya-operator", "msgspec")
    msgspec = f"msgspec=={oldest}" if which == "oldest" else "msgspec"
    python = venv_with(uv, tmp_path, wheels, "asya-operator", msgspec)
    shown = subprocess.run(
        [str(python), "-c", "import msgspec; print(msgspec.__version__)"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    if which == "oldest":
        assert Version(shown.stdout.strip()) == Version(oldest)
    generated = subprocess.run(
        [str(python), "-m", "asya_operator", "crd"],
        capture_output=True, text=True, check=True, env=unlocked_env(), timeout=120,
    )  # fmt: skip
    assert generated.stdout == CRD.read_text(), f"msgspec {shown.stdout.strip()} changes the CRD"
