"""podman here runs with the repository's containers.conf (runc, capped limits, host CAs)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault(
    "CONTAINERS_CONF", str(Path(__file__).resolve().parents[1] / "scripts/podman/containers.conf")
)
