from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asya_gateway import GatewaySettings, SettingsError
from asya_gateway.principals import Principal
from asya_gateway.settings import database_url


def env(**kw: str) -> dict[str, str]:
    return {"ASYA_GATEWAY_TOKENS": "t1", **kw}


def test_defaults_and_urls() -> None:
    s = GatewaySettings.from_env(env())
    assert s.database_url == "sqlite+aiosqlite:///asya-gateway.db"
    assert database_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert database_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert database_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert GatewaySettings.from_env(env(ASYA_GATEWAY_TOKENS="a, b")).tokens == {"a", "b"}


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"ASYA_GATEWAY_TOKENS": ""}, "ASYA_GATEWAY_TOKENS"),
        (env(ASYA_DATABASE_URL="mysql://x"), "ASYA_DATABASE_URL"),
        (env(ASYA_RABBITMQ_URL="http://x"), "ASYA_RABBITMQ_URL"),
        (env(ASYA_GATEWAY_PORT="http"), "ASYA_GATEWAY_PORT"),
        (env(ASYA_GATEWAY_MAX_BODY="10"), "ASYA_GATEWAY_MAX_BODY"),
        (env(ASYA_GATEWAY_MIGRATE="sometimes"), "ASYA_GATEWAY_MIGRATE"),
        (env(ASYA_GATEWAY_DEFAULT_TIMEOUT="0"), "ASYA_GATEWAY_DEFAULT_TIMEOUT"),
        (env(ASYA_HAPPY_END_QUEUE="a b"), "ASYA_HAPPY_END_QUEUE"),
        (env(ASYA_LOG_LEVEL="shout"), "ASYA_LOG_LEVEL"),
        (env(ASYA_CONTROL_EXCHANGE="a b"), "ASYA_CONTROL_EXCHANGE"),
        (env(ASYA_GATEWAY_TOKENS="bad name:t"), "ASYA_GATEWAY_TOKENS"),
        (env(ASYA_GATEWAY_TOKENS="alice:"), "ASYA_GATEWAY_TOKENS"),
        (env(ASYA_GATEWAY_TOKENS="alice:t,bob:t"), "ASYA_GATEWAY_TOKENS"),
        (env(ASYA_GATEWAY_ADMINS="root"), "ASYA_GATEWAY_ADMINS"),
    ],
)
def test_bad_settings_name_the_variable(values: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(values)
    assert info.value.variable == variable


def test_tokens_name_their_principals() -> None:
    s = GatewaySettings.from_env(
        env(ASYA_GATEWAY_TOKENS="alice:a1, alice:a2, bare", ASYA_GATEWAY_ADMINS="alice")
    )
    found = s.token_principals()
    assert found["a1"] == found["a2"] == Principal("alice", admin=True)
    # A bare token's principal is named after its hash: stable, and not the token.
    assert found["bare"] == Principal("token-" + hashlib.sha256(b"bare").hexdigest()[:12])
    assert found["bare"].owns(found["bare"].name)
    assert not found["bare"].owns("alice")
    assert found["a1"].owns("anyone")
    assert found["a1"].scope is None
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(env(ASYA_GATEWAY_TOKENS="alice:bob-secret,bob:bob-secret"))
    assert info.value.variable == "ASYA_GATEWAY_TOKENS"
    assert "one token is given to two principals" in str(info.value)
    assert "bob-secret" not in str(info.value)


def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    return subprocess.run(
        [sys.executable, "-m", "asya_gateway", *args],
        env={**base, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_tools_file_stops_the_start(tmp_path: Path) -> None:
    tools = tmp_path / "tools.yaml"
    tools.write_text("tools:\n  - name: t\n    steps: ['a b']\n")
    proc = run(ASYA_GATEWAY_TOKENS="t", ASYA_GATEWAY_TOOLS=str(tools))
    assert proc.returncode == 2
    assert f"ASYA_GATEWAY_TOOLS: {tools}: tool 't'.steps: invalid step name 'a b'" in proc.stderr


def test_missing_token_stops_the_start() -> None:
    proc = run()
    assert proc.returncode == 2
    assert "asya-gateway: cannot start: ASYA_GATEWAY_TOKENS:" in proc.stderr


def test_migrate_command_on_sqlite(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "g.db"
    proc = run("migrate", ASYA_GATEWAY_TOKENS="t", ASYA_DATABASE_URL=f"sqlite:///{db}")
    assert proc.returncode == 0, proc.stderr
    tables = {
        r[0]
        for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")
    }
    assert {"asya_jobs", "asya_job_events", "alembic_version"} <= tables
    again = run("migrate", ASYA_GATEWAY_TOKENS="t", ASYA_DATABASE_URL=f"sqlite:///{db}")
    assert again.returncode == 0


def test_every_setting_is_documented() -> None:
    import re

    package = Path(__file__).resolve().parents[1]
    used = set(
        re.findall(r'"(ASYA_[A-Z_]+)"', (package / "src/asya_gateway/settings.py").read_text())
    )
    documented = set(re.findall(r"`(ASYA_[A-Z_]+)`", (package / "README.md").read_text()))
    assert used == documented
