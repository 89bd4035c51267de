"""The project's one lock: every third-party version that the hatch environments and images use.

    hatch run lock:update       add what a pyproject or hatch.toml gained; keep every other pin
    hatch run lock:upgrade      re-resolve everything to the newest versions the ranges allow
    python scripts/lock.py envs remove hatch environments whose installed versions left the lock

``requirements/lock.in`` lists the direct requirements, gathered from every package's pyproject
(dependencies and extras) and every environment's ``dependencies`` in hatch.toml, without the
project's own packages. ``requirements/lock.txt`` is ``uv pip compile`` of it: a universal
resolution for Python 3.11 and later. Hatch environments install with it as ``UV_CONSTRAINT``
(hatch.toml), and the images with ``pip install -c`` (scripts/images.sh), so two machines on two
days get the same versions. ``requirements/overrides.txt`` (uv overrides, applied to the lock
and to the environments that set ``UV_OVERRIDE``) drops requirements a wheel declares that the
project never imports. The packages themselves keep their ranges: users who
``pip install asya-<component>`` get the newest versions those ranges allow.

A refresh is a commit of its own, reviewed like code. tests-repo/test_lock.py fails when the lock
and the pyprojects disagree.

Standard library only (it runs before any environment exists), except ``update`` and ``upgrade``,
which need ``uv`` on PATH (the lock environment has it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_IN = ROOT / "requirements" / "lock.in"
LOCK_TXT = ROOT / "requirements" / "lock.txt"
OVERRIDES = ROOT / "requirements" / "overrides.txt"
OWN_PREFIX = "asya-"
HEADER = (
    "# Direct requirements of every package and hatch environment, gathered by\n"
    "# `python scripts/lock.py`; requirements/lock.txt is their resolution. Do not edit.\n"
)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)")


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return normalize(match.group(1))


def pyprojects() -> list[Path]:
    return sorted((ROOT / "packages").glob("*/pyproject.toml"))


def direct_requirements() -> dict[str, list[str]]:
    """Every third-party requirement string, with where it comes from (``file: section``)."""
    found: dict[str, list[str]] = {}

    def add(requirement: str, origin: str) -> None:
        if requirement_name(requirement).startswith(OWN_PREFIX):
            return
        found.setdefault(requirement.strip(), []).append(origin)

    for path in pyprojects():
        project = tomllib.loads(path.read_text())["project"]
        where = path.relative_to(ROOT).as_posix()
        for requirement in project.get("dependencies", []):
            add(requirement, f"{where}: dependencies")
        for extra, requirements in project.get("optional-dependencies", {}).items():
            for requirement in requirements:
                add(requirement, f"{where}: [{extra}]")
    envs = tomllib.loads((ROOT / "hatch.toml").read_text()).get("envs", {})
    for env, config in envs.items():
        for requirement in config.get("dependencies", []):
            add(requirement, f"hatch.toml: envs.{env}")
    return found


def lock_in_text() -> str:
    return HEADER + "".join(f"{r}\n" for r in sorted(direct_requirements(), key=str.lower))


def locked_versions(text: str | None = None) -> dict[str, set[str]]:
    """``name -> versions`` pinned in lock.txt (a universal lock may pin one name twice)."""
    text = LOCK_TXT.read_text() if text is None else text
    pins: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins.setdefault(normalize(match.group(1)), set()).add(match.group(2))
    return pins


def compile_lock(*, upgrade: bool) -> None:
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("lock: uv is not on PATH (run it as `hatch run lock:update`)")
    LOCK_IN.parent.mkdir(exist_ok=True)
    LOCK_IN.write_text(lock_in_text())
    command = [
        uv,
        "pip",
        "compile",
        str(LOCK_IN.relative_to(ROOT)),
        "--output-file",
        str(LOCK_TXT.relative_to(ROOT)),
        "--universal",
        "--python-version",
        "3.11",
        "--no-config",
        "--custom-compile-command",
        "hatch run lock:update",
        "--override",
        str(OVERRIDES.relative_to(ROOT)),
    ]
    if upgrade:
        command.append("--upgrade")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    subprocess.run(command, cwd=ROOT, check=True, env=env)
    print(f"lock: wrote {LOCK_IN.relative_to(ROOT)} and {LOCK_TXT.relative_to(ROOT)}")


def stale_envs() -> list[tuple[str, str]]:
    """Hatch environments (that exist here) holding a version the lock does not pin."""
    hatch = shutil.which("hatch")
    if hatch is None:
        sys.exit("lock: hatch is not on PATH")
    pins = locked_versions()
    names = tomllib.loads((ROOT / "hatch.toml").read_text()).get("envs", {})
    stale = []
    for env in names:
        found = subprocess.run(
            [hatch, "env", "find", env], cwd=ROOT, capture_output=True, text=True, check=False
        )
        path = Path(found.stdout.strip())
        if found.returncode != 0 or not path.is_dir():
            continue
        for info in sorted(path.glob("lib/python*/site-packages/*.dist-info")):
            name, _, version = info.name.removesuffix(".dist-info").partition("-")
            wanted = pins.get(normalize(name))
            if wanted and version not in wanted:
                stale.append(
                    (env, f"{name} {version} installed, {' or '.join(sorted(wanted))} locked")
                )
                break
    return stale


def remove_stale_envs() -> None:
    hatch = shutil.which("hatch")
    if hatch is None:
        sys.exit("lock: hatch is not on PATH")
    for env, why in stale_envs():
        print(f"lock: environment {env!r} is stale ({why}); removing it, hatch recreates it")
        subprocess.run([hatch, "env", "remove", env], cwd=ROOT, check=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "update":
        compile_lock(upgrade=False)
    elif command == "upgrade":
        compile_lock(upgrade=True)
    elif command == "envs":
        remove_stale_envs()
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
