"""``asya-sidecar`` / ``python -m asya_sidecar``: consume ASYA_ACTOR_NAME's queue until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from asya_protocol import signals as _signals

from .errors import RuntimeUnavailable, SettingsError
from .factory import amqp_sidecar
from .settings import SidecarSettings

USAGE = """usage: asya-sidecar [-h]

asya-sidecar consumes ASYA_ACTOR_NAME's queue and hands each message to the runtime.
It takes no arguments: every setting is an environment variable (ASYA_*), listed in the
package README (asya-sidecar). A bad or missing setting stops it at start, naming the variable.
"""


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
    with _signals.honoured():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    if args:
        sys.stderr.write(f"asya-sidecar: unexpected argument {args[0]!r}\n{USAGE}")
        return 2
    try:
        settings = SidecarSettings.from_env()
    except SettingsError as exc:
        sys.stderr.write(f"asya-sidecar: cannot start: {exc}\n")
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        asyncio.run(_run(settings))
    except RuntimeUnavailable as exc:
        sys.stderr.write(f"asya-sidecar: cannot start: {exc}\n")
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
