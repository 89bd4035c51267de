"""The example's folder on sys.path (its modules are imported as the runtime imports them), the
model built once per session, and ``asya dev`` running the pipeline for a block."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_testing.processes import free_port

EXAMPLE = Path(__file__).resolve().parents[1]
ASYA_DEV = [sys.executable, "-m", "asya_cli", "dev"]
sys.path.insert(0, str(EXAMPLE))

from minilm import MiniLM  # noqa: E402 - the example's folder is on sys.path only from here


@pytest.fixture(scope="session")
def model() -> MiniLM:
    return MiniLM()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[str]:
    """``asya dev examples/embed/pipeline.yaml`` on a free port; stopped with Ctrl-C after."""
    port = free_port()
    log = tmp_path / "asya-dev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*ASYA_DEV, str(EXAMPLE / "pipeline.yaml"), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "ready; Ctrl-C stops" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        # Even when the test failed: Ctrl-C first, so asya dev stops its runtimes.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
