"""podman for the tests: building and inspecting images, and its Docker-compatible API.

Pods themselves run on a real kubelet (tests-e2e/cluster/, scripts/cluster.sh); podman builds the
images (scripts/images.sh) and, through ``podman_service``, is the Docker engine the
testcontainers branch talks to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .processes import stop_process
from .services import unavailable

__all__ = ["PodmanError", "podman", "podman_service", "require_images"]


class PodmanError(RuntimeError):
    """A podman command failed; the message carries the command and its stderr."""


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    """Run ``podman args...`` and return its stdout; raise ``PodmanError`` when it fails."""
    proc = subprocess.run(  # noqa: S603 - fixed executable, arguments built here
        ["podman", *args],  # noqa: S607 - podman from PATH, like the kubelet's runtime
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise PodmanError(
            f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def require_images(*images: str) -> None:
    """Skip (fail under CI) unless podman and every image are here; names what is missing."""
    if shutil.which("podman") is None:
        unavailable("podman is not installed (bash scripts/images.sh installs it)")
    if os.getuid() != 0:
        unavailable("the container tests need rootful podman (run as root)")
    missing = [i for i in images if not _exists(i)]
    if missing:
        unavailable(f"images not built: {', '.join(missing)} (run: bash scripts/images.sh)")


def _exists(image: str) -> bool:
    return (
        subprocess.run(  # noqa: S603
            ["podman", "image", "exists", image],  # noqa: S607
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode
        == 0
    )


@contextmanager
def podman_service(directory: Path, timeout: float = 30.0) -> Iterator[str]:
    """``podman system service`` on a Unix socket in ``directory``; yields its ``DOCKER_HOST``.

    A Docker-compatible API: the docker SDK and testcontainers talk to it as to a Docker engine.
    """
    sock = directory / "podman.sock"
    log = (directory / "podman-service.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603
        ["podman", "system", "service", "--time", "0", f"unix://{sock}"],  # noqa: S607
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise PodmanError(
                    f"podman system service did not start: "
                    f"{(directory / 'podman-service.log').read_text(errors='replace')}"
                )
            time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        stop_process(proc)
        log.close()
