from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asya_protocol import DEFAULT_SOCKET_PATH, HandlerMode
from asya_runtime import HandlerKind, HandlerLoadError, RuntimeSettings, SettingsError, load_handler

HERE = str(Path(__file__).parent)


def test_defaults() -> None:
    s = RuntimeSettings.from_env({"ASYA_HANDLER": "m:f"})
    assert s.socket_path == DEFAULT_SOCKET_PATH
    assert s.mode is HandlerMode.PAYLOAD
    assert s.concurrency == 4


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "ASYA_HANDLER"),
        ({"ASYA_HANDLER": "m:f", "ASYA_HANDLER_MODE": "weird"}, "ASYA_HANDLER_MODE"),
        ({"ASYA_HANDLER": "m:f", "ASYA_RUNTIME_CONCURRENCY": "0"}, "ASYA_RUNTIME_CONCURRENCY"),
        ({"ASYA_HANDLER": "m:f", "ASYA_RUNTIME_CONCURRENCY": "many"}, "ASYA_RUNTIME_CONCURRENCY"),
        ({"ASYA_HANDLER": "m:f", "ASYA_SOCKET_PATH": "relative.sock"}, "ASYA_SOCKET_PATH"),
        ({"ASYA_HANDLER": "m:f", "ASYA_SOCKET_PATH": "/" + "x" * 120}, "ASYA_SOCKET_PATH"),
        ({"ASYA_HANDLER": "m:f", "ASYA_MAX_FRAME_SIZE": "10"}, "ASYA_MAX_FRAME_SIZE"),
        ({"ASYA_HANDLER": "m:f", "ASYA_SHUTDOWN_GRACE": "nan"}, "ASYA_SHUTDOWN_GRACE"),
        ({"ASYA_HANDLER": "m:f", "ASYA_SHUTDOWN_GRACE": "-1"}, "ASYA_SHUTDOWN_GRACE"),
        ({"ASYA_HANDLER": "m:f", "ASYA_LOG_LEVEL": "loud"}, "ASYA_LOG_LEVEL"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        RuntimeSettings.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(variable)


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(HERE)


@pytest.mark.usefixtures("on_path")
@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("sample_handlers:preprocess", HandlerKind.SYNC),
        ("sample_handlers:inference", HandlerKind.ASYNC),
        ("sample_handlers:split", HandlerKind.GENERATOR),
        ("sample_handlers:async_split", HandlerKind.ASYNC_GENERATOR),
        ("sample_handlers:Model.predict", HandlerKind.SYNC),
    ],
)
def test_handler_kinds(spec: str, kind: HandlerKind) -> None:
    assert load_handler(spec).kind is kind


@pytest.mark.usefixtures("on_path")
@pytest.mark.parametrize(
    ("spec", "cause"),
    [
        ("sample_handlers", "not of the form"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("sample_handlers:nope", "has no attribute 'nope'"),
        ("sample_handlers:NOT_CALLABLE", "is not callable"),
        ("sample_handlers:NeedsArgs.predict", "NeedsArgs() failed"),
        ("sample_handlers:preprocess.x", "is not a class"),
        ("sample_handlers:Model.nope", "has no attribute 'nope'"),
        ("sample_handlers:a.b.c", "use function or Class.method"),
    ],
)
def test_bad_handlers(spec: str, cause: str) -> None:
    with pytest.raises(HandlerLoadError) as info:
        load_handler(spec)
    assert info.value.variable == "ASYA_HANDLER"
    assert cause in str(info.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "ASYA_HANDLER: not set"),
        ({"ASYA_HANDLER": "no_such_module_xyz:f"}, "ASYA_HANDLER: cannot import module"),
        ({"ASYA_HANDLER": "sample_handlers:NOT_CALLABLE"}, "ASYA_HANDLER: "),
        ({"ASYA_HANDLER": "sample_handlers:f", "ASYA_RUNTIME_CONCURRENCY": "x"}, "ASYA_RUNTIME_"),
    ],
)
def test_process_refuses_to_start(env: dict[str, str], expected: str) -> None:
    child = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    child |= {"PYTHONPATH": HERE, "ASYA_SOCKET_PATH": "/tmp/asya-never-used.sock", **env}
    proc = subprocess.run(
        [sys.executable, "-m", "asya_runtime"],
        env=child,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert f"asya-runtime: cannot start: {expected}" in proc.stderr


def test_help_needs_no_settings_and_arguments_are_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    shown = subprocess.run(
        [sys.executable, "-m", "asya_runtime", "--help"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: asya-runtime")
    refused = subprocess.run(
        [sys.executable, "-m", "asya_runtime", "serve"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "unexpected argument 'serve'" in refused.stderr
