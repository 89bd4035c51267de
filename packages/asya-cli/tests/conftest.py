"""The asya command as a subprocess: ``asya(...)`` runs it to its end, ``dev_running(pipeline)``
keeps ``asya dev`` running for a block and stops it with Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from asya_testing.processes import free_port

ASYA = [sys.executable, "-m", "asya_cli"]
Run = Callable[..., subprocess.CompletedProcess[str]]
DevRunning = Callable[..., AbstractContextManager[str]]


def run_asya(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASYA, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


@contextlib.contextmanager
def running(pipeline: Path, log_dir: Path, cwd: Path | None = None) -> Iterator[str]:
    """``asya dev`` on a free port until the block ends; Ctrl-C must stop it cleanly."""
    port = free_port()
    log = log_dir / f"{pipeline.parent.name}-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*ASYA, "dev", str(pipeline), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
        )
    try:
        deadline = time.monotonic() + 60
        while "ready; Ctrl-C stops" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        # Even when the block failed: Ctrl-C first, so asya dev stops its runtimes (a SIGKILL
        # would leave them running); SIGKILL only if it does not exit in time.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def asya() -> Run:
    return run_asya


@pytest.fixture
def dev_running(tmp_path: Path) -> DevRunning:
    def start(pipeline: Path, cwd: Path | None = None) -> AbstractContextManager[str]:
        return running(pipeline, tmp_path, cwd)

    return start
