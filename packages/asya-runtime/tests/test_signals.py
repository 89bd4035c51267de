"""SIGTERM at any moment of the runtime's start-up ends it promptly with exit code 0."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from asya_testing.processes import START_MOMENTS, handles_sigterm, sigterm_at, wait_until


@pytest.mark.parametrize(
    "moment", [*START_MOMENTS, None], ids=lambda m: "ready" if m is None else f"{m}s"
)
def test_sigterm_during_start_or_once_ready(start_runtime: Any, moment: float | None) -> None:
    with start_runtime("preprocess", wait_ready=moment is None) as (proc, _):
        sigterm_at(proc, moment)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_while_the_handler_module_imports(
    start_runtime: Any, sig: signal.Signals
) -> None:
    """The handler module sleeps 30 s at import: the signal must not wait for it."""
    with start_runtime("slow_import_handlers:echo", wait_ready=False) as (proc, _):
        wait_until(lambda: handles_sigterm(proc.pid), timeout=10, what="SIGTERM handler installed")
        assert proc.alive(), proc.log()
        sent = time.monotonic()
        proc.signal(sig)
        assert proc.wait(timeout=5) == 0, proc.log()
        assert time.monotonic() - sent < 5
