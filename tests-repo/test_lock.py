"""requirements/lock.txt agrees with every pyproject and hatch.toml (scripts/lock.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("asya_lock", ROOT / "scripts" / "lock.py")
assert _spec is not None
assert _spec.loader is not None
lock = importlib.util.module_from_spec(_spec)
sys.modules["asya_lock"] = lock
_spec.loader.exec_module(lock)


def disagreements(requirements: dict[str, list[str]], pins: dict[str, set[str]]) -> list[str]:
    """Each requirement the lock does not hold, or holds only at versions its range excludes."""
    problems = []
    for text, origins in sorted(requirements.items()):
        requirement = Requirement(text)
        name = lock.normalize(requirement.name)
        where = ", ".join(origins)
        versions = pins.get(name)
        if not versions:
            problems.append(f"{text} ({where}) is not in requirements/lock.txt")
            continue
        allowed = SpecifierSet(str(requirement.specifier), prereleases=True)
        if not any(allowed.contains(v) for v in versions):
            problems.append(
                f"{text} ({where}) excludes the locked {name} {', '.join(sorted(versions))}"
            )
    return problems


def test_lock_inputs_are_the_pyprojects_requirements() -> None:
    """requirements/lock.in is what scripts/lock.py gathers now: a new dependency needs a relock."""
    assert lock.LOCK_IN.read_text() == lock.lock_in_text(), (
        "requirements/lock.in is stale: run `hatch run lock:update` and commit both files"
    )


def test_every_requirement_is_locked_within_its_range() -> None:
    problems = disagreements(lock.direct_requirements(), lock.locked_versions())
    assert not problems, "the lock and the pyprojects disagree:\n" + "\n".join(problems)


def test_the_check_catches_a_range_that_excludes_the_lock() -> None:
    """The check itself can fail: a narrowed range and a missing package are both reported."""
    pins = {"msgspec": {"0.23.0"}}
    problems = disagreements(
        {"msgspec>=0.24": ["packages/x/pyproject.toml"], "rich>=13": ["hatch.toml"]},
        pins,
    )
    assert problems == [
        "msgspec>=0.24 (packages/x/pyproject.toml) excludes the locked msgspec 0.23.0",
        "rich>=13 (hatch.toml) is not in requirements/lock.txt",
    ]


def test_own_packages_are_never_locked() -> None:
    """Users install our packages by range; the lock holds third-party versions only."""
    assert not [name for name in lock.locked_versions() if name.startswith("asya-")]
