"""The one settings mechanism (asya_protocol.settings) and the actors' schema built on it."""

from __future__ import annotations

import random
from dataclasses import FrozenInstanceError, dataclass

import pytest

from asya_protocol import ArgumentError, Backoff, HandlerMode, ProtocolError, SettingsError
from asya_protocol.actor_settings import RetryPolicy, RuntimeSettings, SidecarSettings
from asya_protocol.settings import (
    amqp_url,
    boolean,
    env_name,
    env_names,
    group,
    integer,
    listed,
    load,
    number,
    render,
    var,
)


@dataclass(frozen=True, kw_only=True)
class Inner:
    level: int = var("T_LEVEL", integer(0, 9), default=1)


@dataclass(frozen=True, kw_only=True)
class Sample:
    name: str = var("T_NAME", str, required="name the thing")
    flag: bool = var("T_FLAG", boolean, default=False)
    ratio: float = var("T_RATIO", number(0.0, 1.0), default=0.5)
    tags: frozenset[str] = var("T_TAGS", listed(), default=frozenset())
    url: str = var("T_URL", amqp_url, default="amqp://h/")
    off: str = var("T_OFF", str, default="on", empty="")
    inner: Inner = group(Inner)

    def __post_init__(self) -> None:
        if self.flag and self.ratio == 0:
            raise ValueError("T_RATIO: must be > 0 when T_FLAG is on")


def test_defaults_and_parsed_values() -> None:
    s = load(Sample, {"T_NAME": " x ", "T_FLAG": "YES", "T_TAGS": "a, b,,", "T_LEVEL": "3"})
    assert (s.name, s.flag, s.ratio, s.tags, s.inner.level) == ("x", True, 0.5, {"a", "b"}, 3)
    with pytest.raises(FrozenInstanceError):
        s.name = "y"  # type: ignore[misc]


def test_blank_means_unset_unless_empty_is_declared() -> None:
    s = load(Sample, {"T_NAME": "x", "T_RATIO": "  ", "T_OFF": ""})
    assert s.ratio == 0.5
    assert s.off == ""
    assert load(Sample, {"T_NAME": "x"}).off == "on"


@pytest.mark.parametrize(
    ("env", "variable", "reason"),
    [
        ({}, "T_NAME", "not set; name the thing"),
        ({"T_NAME": "x", "T_FLAG": "maybe"}, "T_FLAG", "expected true or false (got 'maybe')"),
        ({"T_NAME": "x", "T_RATIO": "nan"}, "T_RATIO", "must be >= 0.0 and <= 1.0"),
        ({"T_NAME": "x", "T_RATIO": "2"}, "T_RATIO", "must be >= 0.0"),
        ({"T_NAME": "x", "T_URL": "http://h/"}, "T_URL", "expected amqp://"),
        ({"T_NAME": "x", "T_LEVEL": "10"}, "T_LEVEL", "must be within 0..9 (got '10')"),
        ({"T_NAME": "x", "T_FLAG": "1", "T_RATIO": "0"}, "T_RATIO", "must be > 0 when T_FLAG"),
    ],
)
def test_one_error_names_the_variable(env: dict[str, str], variable: str, reason: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(Sample, env)
    assert info.value.variable == variable
    assert reason in str(info.value)
    assert str(info.value).startswith(f"{variable}: ")
    assert isinstance(info.value, ProtocolError)


def test_fields_given_directly_are_not_read() -> None:
    assert load(Sample, {}, name="given").name == "given"


def test_a_field_needs_a_default_or_a_reason_to_be_required() -> None:
    with pytest.raises(ArgumentError):
        var("T_X", str)
    with pytest.raises(ArgumentError):
        var("T_X", str, default=[])


def test_writers_take_the_names_from_the_schema() -> None:
    assert env_name(SidecarSettings, "retry.max_attempts") == "ASYA_RETRY_MAX_ATTEMPTS"
    assert render(SidecarSettings, "runtime_timeout", 30.0) == ("ASYA_RUNTIME_TIMEOUT", "30")
    assert render(SidecarSettings, "runtime_timeout", 0.25) == ("ASYA_RUNTIME_TIMEOUT", "0.25")
    assert render(SidecarSettings, "http_port", None) == ("ASYA_HTTP_PORT", "off")
    assert render(SidecarSettings, "retry.codes", frozenset({"b", "a"}))[1] == "a,b"
    assert render(RuntimeSettings, "mode", HandlerMode.ENVELOPE)[1] == "envelope"
    with pytest.raises(KeyError):
        env_name(SidecarSettings, "nope")


def test_what_a_writer_renders_reads_back_the_same() -> None:
    wanted = SidecarSettings(
        actor="a",
        runtime_timeout=12.5,
        concurrency=3,
        http_port=None,
        exit_when_idle=30.0,
        events_exchange="",
        control_exchange="",
        retry=RetryPolicy(max_attempts=4, base_delay=0.5, codes=frozenset({"x", "y"})),
    )
    paths = [
        "actor",
        "runtime_timeout",
        "concurrency",
        "http_port",
        "exit_when_idle",
        "events_exchange",
        "control_exchange",
        "retry.max_attempts",
        "retry.base_delay",
        "retry.codes",
    ]
    env = {}
    for path in paths:
        value = wanted
        for part in path.split("."):
            value = getattr(value, part)
        name, text = render(SidecarSettings, path, value)
        env[name] = text
    assert load(SidecarSettings, env) == wanted


def test_the_schema_lists_every_variable_once() -> None:
    names = env_names(SidecarSettings)
    assert len(names) == len(set(names))
    assert {"ASYA_ACTOR_NAME", "ASYA_RETRY_CODES", "ASYA_EXIT_WHEN_IDLE"} <= set(names)
    assert "ASYA_HANDLER" in env_names(RuntimeSettings)


def test_the_control_exchange_defaults_and_can_be_disabled() -> None:
    assert load(SidecarSettings, {"ASYA_ACTOR_NAME": "a"}).control_exchange == "asya.control"
    off = load(SidecarSettings, {"ASYA_ACTOR_NAME": "a", "ASYA_CONTROL_EXCHANGE": ""})
    assert off.control_exchange == ""
    with pytest.raises(SettingsError, match="ASYA_CONTROL_EXCHANGE"):
        load(SidecarSettings, {"ASYA_ACTOR_NAME": "a", "ASYA_CONTROL_EXCHANGE": "bad name!"})


def test_backoff_grows_to_its_ceiling_with_jitter_and_resets() -> None:
    b = Backoff(initial=0.1, maximum=2.0, jitter=0.2, random_unit=random.Random(7))
    delays = [b.next_delay() for _ in range(12)]
    assert delays[0] == pytest.approx(0.1, rel=0.21)
    assert max(delays) <= 2.0
    assert all(1.6 <= d <= 2.0 for d in delays[6:])
    assert len(set(delays[6:])) > 1  # jittered, not in step
    b.reset()
    assert b.next_delay() < 0.13
    with pytest.raises(ArgumentError):
        Backoff(initial=3.0, maximum=2.0)
