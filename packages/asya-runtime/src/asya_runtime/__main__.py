"""``asya-runtime`` / ``python -m asya_runtime``: serve the handler named by ASYA_HANDLER."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from .errors import RuntimeStartError
from .loader import load_handler
from .server import RuntimeServer
from .settings import RuntimeSettings

log = logging.getLogger("asya_runtime")


async def _run(settings: RuntimeSettings) -> bool:
    # The handler is imported inside the loop so that a module creating asyncio objects at
    # import time gets this loop.
    handler = load_handler(settings.handler)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await RuntimeServer(settings, handler).serve(stop)


def main() -> int:
    try:
        settings = RuntimeSettings.from_env()
    except RuntimeStartError as exc:
        sys.stderr.write(f"asya-runtime: cannot start: {exc}\n")
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        abandoned = asyncio.run(_run(settings))
    except RuntimeStartError as exc:
        sys.stderr.write(f"asya-runtime: cannot start: {exc}\n")
        return 2
    if abandoned:
        # Handler threads cannot be interrupted; the interpreter would wait for them at exit.
        # Their requests got no reply, so the sidecar redelivers them: leave now.
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
