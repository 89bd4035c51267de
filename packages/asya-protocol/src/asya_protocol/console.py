"""The start every Asya command shares: arguments, settings from the environment, logging.

    def _main(argv: list[str] | None) -> int:
        if (status := no_arguments("asya-sidecar", USAGE, argv)) is not None:
            return status
        settings = start("asya-sidecar", SidecarSettings, quiet=("aiormq",))
        ...

A bad or missing setting ends the process with status 2 and one line on stderr naming the
variable (``asya-sidecar: cannot start: ASYA_CONCURRENCY: must be within 1..10000 (got '0')``),
never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from . import signals
from .settings import SettingsError, load
from .settings import choice as parse_choice

__all__ = [
    "LOG_FORMAT",
    "EventLoop",
    "cannot_start",
    "configure_logging",
    "event_loop",
    "loop_factory",
    "no_arguments",
    "run_command",
    "run_loop",
    "start",
    "usage",
]

S = TypeVar("S")
T = TypeVar("T")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def usage(command: str, what: str) -> str:
    """The help of a command that takes no arguments, only ASYA_* variables."""
    return (
        f"usage: {command} [-h]\n\n{what}\n"
        "It takes no arguments: every setting is an environment variable (ASYA_*), listed in the\n"
        f"package README ({command}). A bad or missing setting stops it at start, naming the "
        "variable.\n"
    )


def no_arguments(command: str, help_text: str, argv: Sequence[str] | None) -> int | None:
    """Handle ``-h``/``--help`` (status 0) and refuse any argument (status 2); else None."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        sys.stdout.write(help_text)
        return 0
    if args:
        sys.stderr.write(f"{command}: unexpected argument {args[0]!r}\n{help_text}")
        return 2
    return None


def run_command(
    command: str, help_text: str, argv: Sequence[str] | None, body: Callable[[], int]
) -> int:
    """A command that takes no arguments: SIGTERM/SIGINT honoured from here on (see
    :mod:`.signals`), ``-h`` answered, any argument refused, else ``body()``'s exit status."""
    with signals.honoured():
        if (status := no_arguments(command, help_text, argv)) is not None:
            return status
        return body()


def cannot_start(command: str, reason: object) -> int:
    """Say why the command cannot start; the exit status for it (2)."""
    sys.stderr.write(f"{command}: cannot start: {reason}\n")
    return 2


def configure_logging(level: str, quiet: Sequence[str] = ()) -> None:
    """Log to stderr at ``level``; the ``quiet`` loggers (chatty libraries) at WARNING or above."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def start(command: str, cls: type[S], *, quiet: Sequence[str] = ()) -> S:
    """Settings of ``cls`` from the environment, and logging at their ``log_level``.

    Exits the process with status 2 (:func:`cannot_start`) on a :class:`SettingsError`.
    """
    try:
        settings = load(cls)
    except SettingsError as exc:
        raise SystemExit(cannot_start(command, exc)) from None
    level: Any = getattr(settings, "log_level", "INFO")
    configure_logging(str(level), quiet)
    return settings


class EventLoop(StrEnum):
    """Which asyncio event loop a command runs on (``ASYA_EVENT_LOOP``)."""

    AUTO = "auto"
    """uvloop when it is installed (the images install it), else the standard library's."""
    UVLOOP = "uvloop"
    """uvloop, or the process does not start."""
    ASYNCIO = "asyncio"
    """The standard library's loop."""


def _uvloop() -> Any:
    try:
        import uvloop  # noqa: PLC0415 - optional: the packages' 'fast' extra
    except ImportError:
        return None
    return uvloop


def event_loop(raw: str) -> EventLoop:
    """Parse ``ASYA_EVENT_LOOP``: ``uvloop`` is refused when uvloop is not installed."""
    choice = parse_choice(EventLoop)(raw)
    if choice is EventLoop.UVLOOP and _uvloop() is None:
        raise ValueError(
            "uvloop is not installed (install uvloop, or the 'fast' extra of asya-runtime, "
            "asya-sidecar or asya-gateway)"
        )
    return choice


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``choice``: uvloop's, or None for the standard library's loop."""
    uvloop = None if choice is EventLoop.ASYNCIO else _uvloop()
    if uvloop is None:
        if choice is EventLoop.UVLOOP:
            raise RuntimeError("ASYA_EVENT_LOOP=uvloop but uvloop is not installed")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_loop(main: Coroutine[Any, Any, T], choice: EventLoop) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
