from __future__ import annotations

import os
import subprocess
import sys

import pytest

from asya_protocol import (
    DEFAULT_CONTROL_EXCHANGE,
    DEFAULT_ERROR_END_QUEUE,
    DEFAULT_EVENTS_EXCHANGE,
    DEFAULT_EXCHANGE,
    DEFAULT_HAPPY_END_QUEUE,
    DEFAULT_SOCKET_PATH,
    EventScope,
)
from asya_sidecar import SettingsError, SidecarSettings


def test_defaults() -> None:
    s = SidecarSettings.from_env({"ASYA_ACTOR_NAME": "inference"})
    assert (s.actor, s.exchange, s.happy_end, s.error_end) == (
        "inference",
        DEFAULT_EXCHANGE,
        DEFAULT_HAPPY_END_QUEUE,
        DEFAULT_ERROR_END_QUEUE,
    )
    assert s.concurrency == 1
    assert s.retry.max_attempts == 1  # no retry unless asked, as in the seed
    assert s.socket_path == DEFAULT_SOCKET_PATH
    assert s.events_exchange == DEFAULT_EVENTS_EXCHANGE
    assert s.control_exchange == DEFAULT_CONTROL_EXCHANGE
    assert s.step_events is EventScope.JOBS
    assert s.progress_interval == 0.1
    assert s.events_batch_window == 0.01  # at most one events message per 10 ms
    assert s.http_port == 8080


def test_everything_set() -> None:
    s = SidecarSettings.from_env(
        {
            "ASYA_ACTOR_NAME": "inference",
            "ASYA_RABBITMQ_URL": "amqps://u:p@broker:5671/vh",
            "ASYA_RABBITMQ_EXCHANGE": "pipelines",
            "ASYA_SOCKET_PATH": "/sock/rt.sock",
            "ASYA_RUNTIME_TIMEOUT": "2.5",
            "ASYA_HAPPY_END_QUEUE": "done",
            "ASYA_ERROR_END_QUEUE": "failed",
            "ASYA_CONCURRENCY": "16",
            "ASYA_RETRY_MAX_ATTEMPTS": "4",
            "ASYA_RETRY_BASE_DELAY": "0.5",
            "ASYA_RETRY_MAX_DELAY": "10",
            "ASYA_RETRY_JITTER": "0",
            "ASYA_RETRY_CODES": "timeout, model_busy",
            "ASYA_REDELIVERY_LIMIT": "2",
            "ASYA_EVENTS_EXCHANGE": "",
            "ASYA_CONTROL_EXCHANGE": "",
            "ASYA_STEP_EVENTS": "all",
            "ASYA_PROGRESS_INTERVAL": "0",
            "ASYA_EVENTS_BATCH_WINDOW": "off",
            "ASYA_HTTP_PORT": "off",
        }
    )
    assert s.rabbitmq_url == "amqps://u:p@broker:5671/vh"
    assert s.runtime_timeout == 2.5
    assert s.concurrency == 16
    assert s.retry.codes == frozenset({"timeout", "model_busy"})
    assert s.retry.max_attempts == 4
    assert s.events_exchange == ""
    assert s.control_exchange == ""
    assert s.step_events is EventScope.ALL
    assert s.progress_interval == 0.0
    assert s.events_batch_window is None
    assert s.http_port is None
    windowed = {"ASYA_ACTOR_NAME": "a", "ASYA_EVENTS_BATCH_WINDOW": "0.05"}
    assert SidecarSettings.from_env(windowed).events_batch_window == 0.05


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "ASYA_ACTOR_NAME"),
        ({"ASYA_ACTOR_NAME": "bad name"}, "ASYA_ACTOR_NAME"),
        ({"ASYA_RABBITMQ_URL": "http://x"}, "ASYA_RABBITMQ_URL"),
        ({"ASYA_RUNTIME_TIMEOUT": "soon"}, "ASYA_RUNTIME_TIMEOUT"),
        ({"ASYA_RUNTIME_TIMEOUT": "0"}, "ASYA_RUNTIME_TIMEOUT"),
        ({"ASYA_CONCURRENCY": "0"}, "ASYA_CONCURRENCY"),
        ({"ASYA_CONCURRENCY": "1.5"}, "ASYA_CONCURRENCY"),
        ({"ASYA_HAPPY_END_QUEUE": "amq.nope"}, "ASYA_HAPPY_END_QUEUE"),
        ({"ASYA_RETRY_JITTER": "2"}, "ASYA_RETRY_JITTER"),
        ({"ASYA_RETRY_CODES": "Not-A-Code"}, "ASYA_RETRY_CODES"),
        ({"ASYA_RETRY_MAX_ATTEMPTS": "nan"}, "ASYA_RETRY_MAX_ATTEMPTS"),
        ({"ASYA_SOCKET_PATH": "rel.sock"}, "ASYA_SOCKET_PATH"),
        ({"ASYA_HTTP_PORT": "70000"}, "ASYA_HTTP_PORT"),
        ({"ASYA_LOG_LEVEL": "chatty"}, "ASYA_LOG_LEVEL"),
        ({"ASYA_STEP_EVENTS": "some"}, "ASYA_STEP_EVENTS"),
        ({"ASYA_PROGRESS_INTERVAL": "-1"}, "ASYA_PROGRESS_INTERVAL"),
        ({"ASYA_EVENTS_BATCH_WINDOW": "2"}, "ASYA_EVENTS_BATCH_WINDOW"),
        ({"ASYA_EVENTS_BATCH_WINDOW": "never"}, "ASYA_EVENTS_BATCH_WINDOW"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    full = {"ASYA_ACTOR_NAME": "inference", **env} if variable != "ASYA_ACTOR_NAME" else env
    with pytest.raises(SettingsError) as info:
        SidecarSettings.from_env(full)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_process_stops_at_start_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    env |= {"ASYA_ACTOR_NAME": "inference", "ASYA_CONCURRENCY": "lots"}
    proc = subprocess.run(
        [sys.executable, "-m", "asya_sidecar"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "asya-sidecar: cannot start: ASYA_CONCURRENCY:" in proc.stderr


def test_process_without_runtime_exits_with_a_hint() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    env |= {
        "ASYA_ACTOR_NAME": "inference",
        "ASYA_SOCKET_PATH": "/tmp/asya-no-runtime-here/rt.sock",
        "ASYA_RUNTIME_WAIT": "0.2",
        "ASYA_HTTP_PORT": "off",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "asya_sidecar"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 3
    assert "no runtime answered on /tmp/asya-no-runtime-here/rt.sock" in proc.stderr
    assert "ASYA_RUNTIME_WAIT" in proc.stderr


def test_help_needs_no_settings_and_arguments_are_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    shown = subprocess.run(
        [sys.executable, "-m", "asya_sidecar", "--help"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: asya-sidecar")
    refused = subprocess.run(
        [sys.executable, "-m", "asya_sidecar", "serve"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "unexpected argument 'serve'" in refused.stderr
