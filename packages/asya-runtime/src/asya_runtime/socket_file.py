"""The runtime's socket file: created ``0660``, a stale one replaced, a live one refused."""

from __future__ import annotations

import logging
import os
import socket
import stat

from .errors import RuntimeStartError

__all__ = ["SOCKET_MODE", "prepare_socket_path"]

log = logging.getLogger("asya_runtime")

SOCKET_MODE = 0o660


def prepare_socket_path(path: str) -> None:
    """Create the directory if missing; remove a stale socket; refuse to steal a live one."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise RuntimeStartError(f"ASYA_SOCKET_PATH: cannot create {directory}: {exc}") from exc
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise RuntimeStartError(f"ASYA_SOCKET_PATH: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a stale file from a previous run
        log.info("removed stale socket file %s", path)
        return
    finally:
        probe.close()
    raise RuntimeStartError(f"ASYA_SOCKET_PATH: another process is serving on {path}")
