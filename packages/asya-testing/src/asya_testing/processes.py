"""Start Asya components as real subprocesses, the way a user (or a pod) would.

Only module names are used (``python -m asya_runtime``), so asya-testing depends on none of the
components; the environment under test must have them installed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from asya_protocol import ControlRequest, encode_control, read_frame_blocking, write_frame_blocking

from .environment import inherited

__all__ = [
    "START_MOMENTS",
    "ManagedProcess",
    "free_port",
    "handles_sigterm",
    "managed_process",
    "ping",
    "runtime_process",
    "short_socket_path",
    "sidecar_process",
    "sigterm_at",
    "wait_until",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.02, what: str = ""
) -> None:
    """Poll ``condition`` until it is true, or raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not true within {timeout}s: {what or condition!r}")
        time.sleep(interval)


@dataclass
class ManagedProcess:
    """A child process whose stderr goes to a file, stopped (and reaped) by its context."""

    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int:
        return stop_process(self.process, timeout)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it is still running after ``timeout``; the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=timeout)


START_MOMENTS = (0.0, 0.02, 0.1, 0.3)
"""Seconds after spawn at which the start-up signal tests send SIGTERM."""


def handles_sigterm(pid: int) -> bool:
    """True when process ``pid`` has a handler installed for SIGTERM (its ``SigCgt`` mask).
    The kernel drops a SIGTERM sent to a PID 1 without one; any other process dies of it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    raise AssertionError(f"no SigCgt line in /proc/{pid}/status")


def sigterm_at(proc: ManagedProcess, moment: float | None, *, timeout: float = 5.0) -> bool:
    """Send SIGTERM ``moment`` seconds after spawn (None: now) and check the exit.

    Exit code 0 within ``timeout`` seconds is required once the process has its SIGTERM
    handler; before that (the interpreter still starting) only death by the signal's default
    action is accepted, as promptly. Returns whether the handler was installed.
    """
    if moment is not None:
        time.sleep(max(0.0, proc.started_at + moment - time.monotonic()))
    if not proc.alive():
        raise AssertionError(f"exited before the signal:\n{proc.log()}")
    handled = handles_sigterm(proc.pid)
    proc.signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {timeout}s after SIGTERM (handler installed: {handled}):\n{proc.log()}"
        ) from None
    # Without its handler yet (the interpreter still starting) the default action ends it.
    allowed = (0,) if handled else (0, -signal.SIGTERM)
    if code not in allowed:
        raise AssertionError(f"exit code {code} after SIGTERM (allowed {allowed}):\n{proc.log()}")
    return handled


@contextmanager
def managed_process(
    argv: list[str], env: Mapping[str, str], *, log_dir: Path, name: str
) -> Iterator[ManagedProcess]:
    log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - argv built by the tests themselves
            argv, env=dict(env), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    managed = ManagedProcess(process, log_path)
    try:
        yield managed
    finally:
        managed.stop()


_socket_dirs: list[str] = []


@atexit.register
def _remove_socket_dirs() -> None:
    for directory in _socket_dirs:
        shutil.rmtree(directory, ignore_errors=True)


def short_socket_path(name: str = "runtime.sock") -> str:
    """A Unix socket path well under the 107-byte limit (pytest's tmp_path can exceed it).
    Its directory is removed when the test process exits."""
    directory = tempfile.mkdtemp(prefix="asya-")
    _socket_dirs.append(directory)
    return os.path.join(directory, name)


def ping(path: str, timeout: float = 2.0) -> bool:
    """True when something on ``path`` answers a ping frame (ok or parse_error both count)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        write_frame_blocking(sock, encode_control(ControlRequest(op="ping")))
        return read_frame_blocking(sock) is not None
    except OSError:
        return False
    finally:
        sock.close()


@contextmanager
def runtime_process(
    handler: str,
    *,
    socket_path: str | None = None,
    env: Mapping[str, str] | None = None,
    python_path: list[str] | None = None,
    log_dir: Path | None = None,
    ready_timeout: float = 20.0,
    wait_ready: bool = True,
) -> Iterator[tuple[ManagedProcess, str]]:
    """Run ``python -m asya_runtime`` serving ``handler``; yield (process, socket path).

    Waits until the runtime answers a ping, or fails with the runtime's log.
    """
    path = socket_path or short_socket_path()
    child_env = inherited(ASYA_HANDLER=handler, ASYA_SOCKET_PATH=path)
    if python_path:
        child_env["PYTHONPATH"] = os.pathsep.join(
            [*python_path, *filter(None, [child_env.get("PYTHONPATH")])]
        )
    child_env.update(env or {})
    directory = log_dir or Path(tempfile.mkdtemp(prefix="asya-logs-"))
    with managed_process(
        [sys.executable, "-m", "asya_runtime"], child_env, log_dir=directory, name="runtime"
    ) as proc:
        if wait_ready:
            try:
                wait_until(
                    lambda: not proc.alive() or ping(path),
                    timeout=ready_timeout,
                    what=f"runtime answers on {path}",
                )
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n--- runtime log ---\n{proc.log()}") from None
            if not proc.alive():
                raise RuntimeError(f"runtime exited at start:\n{proc.log()}")
        yield proc, path


@contextmanager
def sidecar_process(
    actor: str,
    *,
    env: Mapping[str, str],
    log_dir: Path,
) -> Iterator[ManagedProcess]:
    """Run ``python -m asya_sidecar`` for ``actor`` with the given settings (not waited on)."""
    child_env = inherited(ASYA_ACTOR_NAME=actor, ASYA_HTTP_PORT="off")
    child_env.update(env)
    with managed_process(
        [sys.executable, "-m", "asya_sidecar"], child_env, log_dir=log_dir, name=f"sidecar-{actor}"
    ) as proc:
        yield proc
