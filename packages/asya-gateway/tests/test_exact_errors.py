"""The pure decisions behind the gateway's exact errors: JSON-RPC messages refused before the
SDK, the Host allow-list, what of a job's error a client sees, text the database cannot hold,
and the settings that configure them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asya_gateway import AuthMode, GatewaySettings, SettingsError
from asya_gateway.errors import InvalidQuery, check_text, public_error
from asya_gateway.jobs import JobQuery
from asya_gateway.middleware import host_allowed, jsonrpc_refusal

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def refusal(body: Any) -> tuple[int, int, Any] | None:
    """``(HTTP status, JSON-RPC code, id)`` of the refusal of ``body``, or None."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    found = jsonrpc_refusal(raw)
    if found is None:
        return None
    status, answer = found
    assert answer["jsonrpc"] == "2.0"
    return status, answer["error"]["code"], answer["id"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", (400, -32700, None)),
        (b"", (400, -32700, None)),
        (b"\xff\xfe{", (400, -32700, None)),
        ([PING], (400, -32600, None)),
        ([], (400, -32600, None)),
        ("ping", (400, -32600, None)),
        (5, (400, -32600, None)),
        ({"foo": 1}, (400, -32600, None)),
        ({**PING, "jsonrpc": "1.0"}, (200, -32600, 1)),
        ({"id": 1, "method": "ping"}, (200, -32600, 1)),
        ({**PING, "id": {"a": 1}}, (400, -32600, None)),
        ({**PING, "id": None}, (400, -32600, None)),
        ({**PING, "id": True}, (400, -32600, None)),
        ({**PING, "id": 1.5}, (400, -32600, None)),
        ({**PING, "id": [1]}, (400, -32600, None)),
        ({**PING, "method": 5}, (200, -32600, 1)),
        ({**PING, "params": [1]}, (200, -32600, 1)),
        ({**PING, "id": "a", "params": "x"}, (200, -32600, "a")),
        ({"jsonrpc": "2.0", "id": 9}, (200, -32600, 9)),
        ({"jsonrpc": "2.0", "id": 9, "result": {}, "error": {}}, (200, -32600, 9)),
        ({"jsonrpc": "2.0"}, (400, -32600, None)),
    ],
)
def test_invalid_messages_are_answered(body: Any, expected: tuple[int, int, Any]) -> None:
    assert refusal(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        PING,
        {**PING, "id": "abc"},
        {**PING, "params": {}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 3, "result": {}},
        {"jsonrpc": "2.0", "id": 3, "error": {"code": 1, "message": "no"}},
    ],
)
def test_valid_messages_go_to_the_sdk(body: Any) -> None:
    assert refusal(body) is None


def test_deep_invalid_json_is_a_parse_error() -> None:
    assert refusal(b"[" * 100_000) == (400, -32700, None)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8000", True),
        ("localhost", True),
        ("LOCALHOST:9999", True),
        ("[::1]:8000", True),
        ("asya-gateway.ns.svc:80", True),
        ("public.example:443", True),
        ("public.example:8443", False),
        ("evil.example:8000", False),
        ("evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("localhost:", False),
        ("", False),
    ],
)
def test_host_allow_list(host: str, ok: bool) -> None:
    allowed = frozenset(
        {"127.0.0.1", "localhost", "[::1]", "asya-gateway.ns.svc", "public.example:443"}
    )
    assert host_allowed(host, allowed) is ok


def test_a_star_allows_any_host() -> None:
    assert host_allowed("evil.example:1", frozenset({"*"}))


def test_served_hosts_defaults_and_extras() -> None:
    local = GatewaySettings(auth=AuthMode.DISABLED, host="127.0.0.1")
    assert local.served_hosts() == {"localhost", "127.0.0.1", "[::1]"}
    settings = GatewaySettings.from_env(
        {
            "ASYA_GATEWAY_TOKENS": "t",
            "ASYA_GATEWAY_HOST": "10.1.2.3",
            "ASYA_GATEWAY_ALLOWED_HOSTS": "Gateway.Example, asya-gateway:80",
        }
    )
    assert settings.served_hosts() == {
        "localhost",
        "127.0.0.1",
        "[::1]",
        "10.1.2.3",
        "gateway.example",
        "asya-gateway:80",
    }
    everywhere = GatewaySettings.from_env({"ASYA_GATEWAY_TOKENS": "t", "ASYA_GATEWAY_HOST": "::"})
    assert everywhere.served_hosts() == {"localhost", "127.0.0.1", "[::1]"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ASYA_GATEWAY_ALLOWED_HOSTS", "http://evil.example"),
        ("ASYA_GATEWAY_ALLOWED_HOSTS", "host/path"),
        ("ASYA_GATEWAY_MAX_SESSIONS", "0"),
        ("ASYA_GATEWAY_MAX_SESSIONS", "many"),
        ("ASYA_GATEWAY_SESSION_IDLE_TIMEOUT", "0"),
        ("ASYA_GATEWAY_SESSION_IDLE_TIMEOUT", "nan"),
    ],
)
def test_bad_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        GatewaySettings.from_env({"ASYA_GATEWAY_TOKENS": "t", variable: value})


def test_session_settings() -> None:
    settings = GatewaySettings.from_env(
        {
            "ASYA_GATEWAY_TOKENS": "t",
            "ASYA_GATEWAY_MAX_SESSIONS": "5",
            "ASYA_GATEWAY_SESSION_IDLE_TIMEOUT": "2.5",
        }
    )
    assert (settings.max_sessions, settings.session_idle_timeout) == (5, 2.5)


HANDLER_ERROR = {
    "error": "handler_error",
    "message": "cannot handle ['k']",
    "step": "inference",
    "original_payload": {"k": 1},
    "details": {
        "type": "builtins.ValueError",
        "traceback": 'Traceback (most recent call last):\n  File "/srv/app/handler.py"...',
    },
    "attempts": 3,
}


def test_public_error_drops_the_traceback_and_the_input() -> None:
    assert public_error(HANDLER_ERROR) == {
        "error": "handler_error",
        "message": "cannot handle ['k']",
        "step": "inference",
        "details": {"type": "builtins.ValueError"},
        "attempts": 3,
    }


def test_public_error_of_a_fan_out_filters_every_branch() -> None:
    error = {"error": "branch_failed", "message": "1 of 2 branches failed"}
    public = public_error({**error, "branches": [HANDLER_ERROR]})
    assert public == {**error, "branches": [public_error(HANDLER_ERROR)]}
    assert "traceback" not in json.dumps(public)
    assert public_error({"error": "timeout", "message": "late"}) == {
        "error": "timeout",
        "message": "late",
    }


@pytest.mark.parametrize(
    ("value", "reason"), [("a\x00b", "NUL"), ("\ud800", "surrogate"), ("x" * 10 + "\x00", "NUL")]
)
def test_text_the_database_cannot_hold_is_refused(value: str, reason: str) -> None:
    with pytest.raises(InvalidQuery, match=reason) as caught:
        check_text("job_id", value)
    assert caught.value.field == "job_id"
    assert str(caught.value).startswith("job_id: ")


def test_ordinary_text_passes() -> None:
    text = "'); DROP TABLE asya_jobs; -- \u2603"
    assert check_text("tool", text) == text


def test_a_query_is_checked_when_built() -> None:
    with pytest.raises(InvalidQuery, match="before"):
        JobQuery(before="x\x00")
    assert JobQuery(tool="ok").tool == "ok"
