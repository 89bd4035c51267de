"""``asya-runtime`` / ``python -m asya_runtime``: serve the handler named by ASYA_HANDLER."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from asya_protocol import signals as _signals

from .errors import RuntimeStartError, SettingsError
from .loader import load_handler
from .server import RuntimeServer, Stopped
from .settings import RuntimeSettings

log = logging.getLogger("asya_runtime")

EXIT_STUCK = 70
"""Exit status when a handler stayed stuck past ASYA_HANDLER_STUCK_EXIT (EX_SOFTWARE)."""

USAGE = """usage: asya-runtime [-h]

asya-runtime serves the handler named by ASYA_HANDLER on the runtime socket.
It takes no arguments: every setting is an environment variable (ASYA_*), listed in the
package README (asya-runtime). A bad or missing setting stops it at start, naming the variable.
"""


async def _run(settings: RuntimeSettings) -> Stopped:
    # The handler is imported inside the loop so that a module creating asyncio objects at
    # import time gets this loop.
    # A stop signal while it imports (a model load can take minutes) ends start-up at once.
    handler = load_handler(settings.handler)
    stop = asyncio.Event()
    _signals.attach(stop)
    return await RuntimeServer(settings, handler).serve(stop)


def main(argv: list[str] | None = None) -> int:
    with _signals.honoured():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    if args:
        sys.stderr.write(f"asya-runtime: unexpected argument {args[0]!r}\n{USAGE}")
        return 2
    try:
        settings = RuntimeSettings.from_env()
    except SettingsError as exc:
        sys.stderr.write(f"asya-runtime: cannot start: {exc}\n")
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        stopped = asyncio.run(_run(settings))
    except RuntimeStartError as exc:
        sys.stderr.write(f"asya-runtime: cannot start: {exc}\n")
        return 2
    if stopped is not Stopped.CLEAN:
        # Handler threads cannot be interrupted; the interpreter would wait for them at exit.
        # Their requests got no reply, so the sidecar redelivers them: leave now.
        logging.shutdown()
        os._exit(EXIT_STUCK if stopped is Stopped.STUCK else 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
