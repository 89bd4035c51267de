"""What the probes report: named checks, each passing or failing since a moment, with its error.

Pure state (a clock is passed in): the watches, the work queue's workers, the resync timer and
the leader election each own a :class:`Check` and say when they work and when they fail.
:meth:`Health.readiness` is true when every check passes (a watch passes once it has listed and
is watching); :meth:`Health.liveness` is false when a check has failed for longer than
``unhealthy_after`` seconds without a pass in between, so the kubelet restarts the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .kubeclient import KubeError

__all__ = ["Check", "Health", "describe"]

STARTING = "starting"
OK = "ok"


def describe(error: BaseException | str) -> str:
    """A one-line account of an error: ``Forbidden: asyas.asya.sh is forbidden: ...``."""
    if isinstance(error, str):
        return error
    if isinstance(error, KubeError):
        return f"{type(error).__name__}: {error.message}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


@dataclass
class Check:
    name: str
    clock: Callable[[], float] = time.monotonic
    passing: bool = False
    """False until the first :meth:`passed`: a check is not ready before it has worked once."""
    error: str = STARTING
    failing_since: float | None = None
    """When the current run of failures began (None while passing, or before any failure)."""

    def passed(self) -> None:
        self.passing, self.error, self.failing_since = True, OK, None

    def failed(self, error: BaseException | str, *, since: float | None = None) -> None:
        """Record a failure; ``since`` dates the run of failures (default: the first of them)."""
        self.passing, self.error = False, describe(error)
        if since is not None:
            self.failing_since = since
        elif self.failing_since is None:
            self.failing_since = self.clock()

    def failing_for(self) -> float:
        return 0.0 if self.failing_since is None else self.clock() - self.failing_since


@dataclass
class Health:
    unhealthy_after: float = 120.0
    clock: Callable[[], float] = time.monotonic
    checks: dict[str, Check] = field(default_factory=dict)

    def check(self, name: str) -> Check:
        """The check called ``name``, made (not passing yet) the first time it is asked for."""
        if name not in self.checks:
            self.checks[name] = Check(name, self.clock)
        return self.checks[name]

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """(every check passes, each check's state: ``ok`` or its last error)."""
        states = {name: c.error for name, c in sorted(self.checks.items())}
        return all(c.passing for c in self.checks.values()), states

    def liveness(self) -> tuple[bool, dict[str, str]]:
        """(no check has failed for longer than ``unhealthy_after``, the ones that have)."""
        stuck = {
            name: f"{c.error} (failing for {c.failing_for():.0f}s)"
            for name, c in sorted(self.checks.items())
            if not c.passing and c.failing_for() > self.unhealthy_after
        }
        return not stuck, stuck
