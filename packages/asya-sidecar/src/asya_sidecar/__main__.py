"""``asya-sidecar`` / ``python -m asya_sidecar``: consume ASYA_ACTOR_NAME's queue until SIGTERM."""

from __future__ import annotations

import asyncio

from asya_protocol import signals as _signals
from asya_protocol.console import cannot_start, run_command, run_loop, start, usage

from .errors import RuntimeUnavailable
from .factory import amqp_sidecar
from .settings import SidecarSettings

COMMAND = "asya-sidecar"
USAGE = usage(
    COMMAND, "asya-sidecar consumes ASYA_ACTOR_NAME's queue and hands each message to the runtime."
)


async def _run(settings: SidecarSettings) -> None:
    stop = asyncio.Event()
    _signals.attach(stop)
    sidecar = amqp_sidecar(settings)
    running = asyncio.create_task(sidecar.run(stop), name="sidecar")
    stopped = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done() and not sidecar.consuming.is_set():
            # Stopped while starting (waiting for the runtime, connecting): nothing is in
            # flight and nothing was acked, so there is nothing to drain. Leave now.
            running.cancel()
            await asyncio.wait({running})
            if not running.cancelled():
                running.result()
            return
        await running
    finally:
        stopped.cancel()


def main(argv: list[str] | None = None) -> int:
    return run_command(COMMAND, USAGE, argv, _main)


def _main() -> int:
    settings = start(COMMAND, SidecarSettings, quiet=("aiormq",))
    try:
        run_loop(_run(settings), settings.event_loop)
    except RuntimeUnavailable as exc:
        cannot_start(COMMAND, exc)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
