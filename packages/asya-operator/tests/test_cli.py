import os
import subprocess
import sys

import pytest

import asya_operator
from asya_operator.settings import OperatorSettings, SettingsError


def test_version_is_exposed() -> None:
    assert asya_operator.__version__.count(".") == 2


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    return subprocess.run(
        [sys.executable, "-m", "asya_operator", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**base, **env},
        timeout=60,
    )


def test_a_command_is_required() -> None:
    proc = run()
    assert proc.returncode == 2
    assert "{run,crd}" in proc.stderr


def test_run_refuses_bad_settings_naming_the_variable() -> None:
    proc = run("run", ASYA_RABBITMQ_URL="http://not-amqp")
    assert proc.returncode == 2
    assert "asya-operator: cannot start: ASYA_RABBITMQ_URL:" in proc.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (
            {"ASYA_RABBITMQ_URL": "amqp://h/", "ASYA_LEADER_ELECTION": "maybe"},
            "ASYA_LEADER_ELECTION",
        ),
        ({"ASYA_RABBITMQ_URL": "amqp://h/", "ASYA_RESYNC_SECONDS": "0"}, "ASYA_RESYNC_SECONDS"),
        (
            {"ASYA_RABBITMQ_URL": "amqp://h/", "ASYA_OPERATOR_WORKERS": "99"},
            "ASYA_OPERATOR_WORKERS",
        ),
        ({"ASYA_RABBITMQ_URL": "amqp://h/", "ASYA_LOG_LEVEL": "loud"}, "ASYA_LOG_LEVEL"),
    ],
)
def test_settings_errors(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        OperatorSettings.from_env(env)
    assert info.value.variable == variable


def test_settings_defaults() -> None:
    s = OperatorSettings.from_env(
        {"ASYA_RABBITMQ_URL": "amqp://u:p@rabbit:5672/", "ASYA_WATCH_NAMESPACES": "a, b"}
    )
    assert s.watch_namespaces == ("a", "b")
    assert s.leader_election is True
    assert s.identity


def test_every_setting_is_documented() -> None:
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1]
    used = set(
        re.findall(r'"(ASYA_[A-Z_]+)"', (package / "src/asya_operator/settings.py").read_text())
    )
    documented = set(re.findall(r"`(ASYA_[A-Z_]+)`", (package / "README.md").read_text()))
    assert used == documented
