"""The shared start of every command: help, refused arguments, settings errors, logging."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass

import pytest

from asya_protocol.console import (
    EventLoop,
    cannot_start,
    event_loop,
    loop_factory,
    no_arguments,
    run_loop,
    start,
    usage,
)
from asya_protocol.settings import integer, log_level, var

HELP = usage("asya-thing", "asya-thing does a thing.")


@dataclass(frozen=True, kw_only=True)
class Thing:
    count: int = var("T_COUNT", integer(1, 9), default=1)
    log_level: str = var("T_LOG_LEVEL", log_level, default="INFO")


def test_help_and_refused_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert HELP.startswith("usage: asya-thing [-h]\n\nasya-thing does a thing.\n")
    assert no_arguments("asya-thing", HELP, ["--help"]) == 0
    assert capsys.readouterr().out == HELP
    assert no_arguments("asya-thing", HELP, ["serve"]) == 2
    assert capsys.readouterr().err.startswith("asya-thing: unexpected argument 'serve'\nusage:")
    assert no_arguments("asya-thing", HELP, []) is None


def test_a_bad_setting_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("T_COUNT", "0")
    with pytest.raises(SystemExit) as info:
        start("asya-thing", Thing)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == "asya-thing: cannot start: T_COUNT: must be within 1..9 (got '0')\n"
    assert "Traceback" not in err


def test_settings_and_quiet_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_COUNT", "3")
    monkeypatch.setenv("T_LOG_LEVEL", "debug")
    chatty = logging.getLogger("asya-test-chatty")
    before = chatty.level
    try:
        assert start("asya-thing", Thing, quiet=("asya-test-chatty",)).count == 3
        assert chatty.level >= logging.WARNING
    finally:
        chatty.setLevel(before)


def test_cannot_start_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert cannot_start("asya-thing", "ASYA_X: broken") == 2
    assert capsys.readouterr().err == "asya-thing: cannot start: ASYA_X: broken\n"


async def _loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_the_event_loop_each_choice_runs_on() -> None:
    assert run_loop(_loop_name(), EventLoop.ASYNCIO) == "asyncio"
    assert run_loop(_loop_name(), EventLoop.UVLOOP) == "uvloop"  # the test env installs it
    assert run_loop(_loop_name(), EventLoop.AUTO) == "uvloop"
    assert event_loop("asyncio") is EventLoop.ASYNCIO


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert run_loop(_loop_name(), EventLoop.AUTO) == "asyncio"
    with pytest.raises(ValueError, match="uvloop is not installed"):
        event_loop("uvloop")
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        loop_factory(EventLoop.UVLOOP)
    with pytest.raises(ValueError, match="expected one of auto, uvloop, asyncio"):
        event_loop("trio")
