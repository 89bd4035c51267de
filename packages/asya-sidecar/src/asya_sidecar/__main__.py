"""``asya-sidecar`` / ``python -m asya_sidecar``: consume ASYA_ACTOR_NAME's queue until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await amqp_sidecar(settings).run(stop)


def main(argv: list[str] | None = None) -> int:
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
