"""Each package builds its own wheel, at its own version, with its own dependencies."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_wheel_builds_at_its_own_version(package: Path, tmp_path: Path) -> None:
    import_name = package.name.replace("-", "_")
    about = (package / "src" / import_name / "__about__.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', about)
    assert version is not None
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=package,
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name == f"{import_name}-{version.group(1)}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"{import_name}-{version.group(1)}.dist-info/METADATA").decode()
    assert f"{import_name}/py.typed" in names
    assert f"{import_name}/__init__.py" in names
    assert not any(n.startswith(("tests/", "src/")) for n in names)
    requires = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)", metadata, re.MULTILINE)
    if package.name == "asya-protocol":
        assert requires == ["msgspec"]
    else:
        assert "asya-protocol" in requires
