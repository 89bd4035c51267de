"""``asya-gateway`` (serve) and ``asya-gateway migrate`` (apply database migrations)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from asya_protocol import console
from asya_protocol import signals as _signals

from .settings import GatewaySettings
from .tools import ToolsFileError

COMMAND = "asya-gateway"
QUIET = ("aiormq", "sqlalchemy.engine")


def main(argv: list[str] | None = None) -> int:
    # uvicorn takes the signals over while it serves, and re-raises a caught one to these
    # handlers after its graceful shutdown (so that too ends in exit code 0).
    with _signals.honoured():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve HTTP (the default)")
    sub.add_parser("migrate", help="apply database migrations to ASYA_DATABASE_URL and exit")
    args = parser.parse_args(argv)
    # A bad setting exits with status 2 naming the variable (asya_protocol.console).
    settings = console.start(COMMAND, GatewaySettings, quiet=QUIET)
    if args.command == "migrate":
        from .migrate import upgrade  # noqa: PLC0415

        asyncio.run(upgrade(settings.database_url))
        sys.stdout.write("migrations applied\n")
        return 0
    import uvicorn  # noqa: PLC0415

    from .app import create_app  # noqa: PLC0415

    try:
        app = create_app(settings)
    except ToolsFileError as exc:
        return console.cannot_start(COMMAND, f"ASYA_GATEWAY_TOOLS: {exc}")
    uvicorn.run(
        app.asgi,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop=settings.event_loop.value,  # auto: uvloop if installed; http auto: httptools
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
