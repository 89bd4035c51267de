"""SIGTERM and SIGINT honoured at every moment of the process, start-up included.

``honoured()`` wraps the whole of ``main``: from its first line, a stop signal during
start-up (settings, heavy imports, a handler module, a kubeconfig, a first connection) ends
the process at once with exit code 0, by raising ``SystemExit(0)`` where it is. Once the
asyncio loop serves, ``attach(stop)`` hands the signals to the loop, where they set ``stop``;
a signal that came in before (and was swallowed by start-up code) sets it at once. In the
image an init (tini) is PID 1, so a signal before the interpreter runs this is not lost
either: tini forwards it, and the child's default action ends it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


def _during_start(signum: int, frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    if first:
        raise SystemExit(0)


@contextmanager
def honoured() -> Iterator[None]:
    """Install the start-up handler for the block; restore the previous handlers after it."""
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {
        sig: signal.signal(sig, _during_start) for sig in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def attach(stop: asyncio.Event) -> None:
    """From now on a stop signal sets ``stop`` in the running loop (and one already seen does)."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if _received:
        stop.set()
