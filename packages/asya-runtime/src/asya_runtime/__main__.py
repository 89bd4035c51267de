"""``asya-runtime`` / ``python -m asya_runtime``: serve the handler named by ASYA_HANDLER."""

from __future__ import annotations

import asyncio
import logging
import os

from asya_protocol import signals as _signals
from asya_protocol.console import cannot_start, run_command, run_loop, start, usage

from .errors import RuntimeStartError
from .loader import load_handler
from .server import RuntimeServer, Stopped
from .settings import RuntimeSettings

log = logging.getLogger("asya_runtime")

EXIT_STUCK = 70
"""Exit status when a handler stayed stuck past ASYA_HANDLER_STUCK_EXIT, or a task of the server
failed (EX_SOFTWARE)."""

COMMAND = "asya-runtime"
USAGE = usage(
    COMMAND, "asya-runtime serves the handler named by ASYA_HANDLER on the runtime socket."
)


async def _run(settings: RuntimeSettings) -> Stopped:
    # The handler is imported inside the loop so that a module creating asyncio objects at
    # import time gets this loop.
    # A stop signal while it imports (a model load can take minutes) ends start-up at once.
    handler = load_handler(settings.handler)
    stop = asyncio.Event()
    _signals.attach(stop)
    return await RuntimeServer(settings, handler).serve(stop)


def main(argv: list[str] | None = None) -> int:
    return run_command(COMMAND, USAGE, argv, _main)


def _main() -> int:
    settings = start(COMMAND, RuntimeSettings)
    try:
        stopped = run_loop(_run(settings), settings.event_loop)
    except RuntimeStartError as exc:
        return cannot_start(COMMAND, exc)
    if stopped is not Stopped.CLEAN:
        # Handler threads cannot be interrupted; the interpreter would wait for them at exit.
        # Their requests got no reply, so the sidecar redelivers them: leave now.
        logging.shutdown()
        os._exit(0 if stopped is Stopped.ABANDONED else EXIT_STUCK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
