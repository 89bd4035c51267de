"""One way to read settings: typed, frozen dataclasses filled from the environment at start.

A settings class is a frozen dataclass whose fields say where they come from::

    @dataclass(frozen=True, kw_only=True)
    class Settings:
        concurrency: int = var("ASYA_CONCURRENCY", integer(1, 10_000), default=1)
        retry: RetryPolicy = group(RetryPolicy)

    settings = load(Settings)          # from os.environ; load(Settings, env) for a mapping

Every failure is one :class:`SettingsError` naming the variable, so a process can stop at start
with a line such as ``ASYA_CONCURRENCY: must be within 1..10000 (got '0')``. A blank value means
"not set" (the default applies) unless the variable declares ``empty=...``. The same field
metadata lets a writer of the environment (the operator, which builds a sidecar's env) take the
names from the class instead of spelling them again (:func:`env_name`, :func:`render`).

Why not pydantic-settings: asya-protocol is reused by third-party runtimes and depends on msgspec
alone; the parsers here are a few lines each, and the error names the variable, not a model path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import ArgumentError, ProtocolError

__all__ = [
    "LOG_LEVELS",
    "SettingsError",
    "Var",
    "absolute_path",
    "amqp_url",
    "boolean",
    "choice",
    "env_name",
    "env_names",
    "group",
    "integer",
    "listed",
    "load",
    "log_level",
    "number",
    "render",
    "text",
    "var",
]

T = TypeVar("T")
S = TypeVar("S")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_MISSING: Any = dataclasses.MISSING
_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()


class SettingsError(ProtocolError):
    """A setting from the environment is missing or invalid; ``variable`` names it."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Var:
    """Where a field comes from: the variable, how its text is parsed, how a value is written."""

    name: str
    parse: Callable[[str], Any]
    required: str | None = None
    """If set, the variable must be given; the text says what to put in it."""
    empty: Any = _UNSET
    """The value when the variable is present but blank (default: blank means not set)."""
    write: Callable[[Any], str] = str


def var(
    name: str,
    parse: Callable[[str], T],
    *,
    default: Any = _MISSING,
    required: str | None = None,
    empty: Any = _UNSET,
    write: Callable[[Any], str] | None = None,
) -> Any:
    """A dataclass field read from the variable ``name`` (see the module's docstring)."""
    spec = Var(name, parse, required, empty, write or _write)
    if required is not None:
        return dataclasses.field(metadata={"env": spec})
    if default is _MISSING:
        raise ArgumentError(f"{name}: give a default or required=...")
    if isinstance(default, list | dict | set):
        raise ArgumentError(f"{name}: use an immutable default (tuple, frozenset)")
    return dataclasses.field(default=default, metadata={"env": spec})


def group(cls: type[Any]) -> Any:
    """A field holding another settings dataclass, read from the same environment."""
    return dataclasses.field(default_factory=cls, metadata={"group": cls})


def load(cls: type[S], env: Mapping[str, str] | None = None, **given: Any) -> S:
    """Build ``cls`` from ``env`` (default ``os.environ``); ``given`` fields are taken as they are.

    Raises :class:`SettingsError` for the first variable that is missing or invalid, and for a
    ``ValueError`` raised by the class's own ``__post_init__`` (its message should start with the
    variable's name followed by a colon).
    """
    env = os.environ if env is None else env
    values = dict(given)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            continue
        if "group" in f.metadata:
            values[f.name] = load(f.metadata["group"], env)
            continue
        spec: Var | None = f.metadata.get("env")
        if spec is not None:
            value = _read(spec, env)
            if value is not _MISSING:
                values[f.name] = value
    try:
        return cls(**values)
    except ValueError as exc:
        name, _, reason = str(exc).partition(": ")
        if reason and name.isupper():
            raise SettingsError(name, reason) from None
        raise SettingsError(cls.__name__, str(exc)) from None


def _read(spec: Var, env: Mapping[str, str]) -> Any:
    raw = env.get(spec.name)
    if raw is None or raw.strip() == "":
        if raw is not None and spec.empty is not _UNSET:
            return spec.empty
        if spec.required is not None:
            raise SettingsError(spec.name, f"not set; {spec.required}")
        return _MISSING
    try:
        return spec.parse(raw.strip())
    except (ValueError, ProtocolError) as exc:
        reason = exc.reason if isinstance(exc, SettingsError) else str(exc)
        raise SettingsError(spec.name, f"{reason} (got {raw.strip()!r})") from None


def _spec(cls: type[Any], path: str) -> Var:
    head, _, rest = path.partition(".")
    for f in dataclasses.fields(cls):
        if f.name == head:
            if rest:
                return _spec(f.metadata["group"], rest)
            spec: Var = f.metadata["env"]
            return spec
    raise KeyError(f"{cls.__name__} has no setting {path!r}")


def env_name(cls: type[Any], path: str) -> str:
    """The variable behind a field: ``env_name(SidecarSettings, "retry.max_attempts")``."""
    return _spec(cls, path).name


def env_names(cls: type[Any]) -> tuple[str, ...]:
    """Every variable a settings class reads, nested groups included, in field order."""
    names: list[str] = []
    for f in dataclasses.fields(cls):
        if "group" in f.metadata:
            names.extend(env_names(f.metadata["group"]))
        elif "env" in f.metadata:
            names.append(f.metadata["env"].name)
    return tuple(names)


def render(cls: type[Any], path: str, value: Any) -> tuple[str, str]:
    """``(variable, text)`` for a value, written so that the field's parser reads it back."""
    spec = _spec(cls, path)
    return spec.name, spec.write(value)


def _write(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value == int(value) and abs(value) < 1e15 else repr(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, frozenset | tuple | list):
        return ",".join(
            sorted(map(str, value)) if isinstance(value, frozenset) else map(str, value)
        )
    if value is None:
        return ""
    return str(value)


# --- parsers: each takes the stripped text and returns the value or raises ValueError ---------


def text(raw: str) -> str:
    return raw


def integer(minimum: int, maximum: int = 2**31) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be within {minimum}..{maximum}")
        return value

    return parse


def number(
    minimum: float, maximum: float = float("inf"), *, above: bool = False
) -> Callable[[str], float]:
    """A float within ``minimum..maximum`` (``above=True``: strictly greater than the minimum)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
        low_ok = value > minimum if above else value >= minimum
        if not (low_ok and value <= maximum):  # also refuses nan
            low = f"> {minimum}" if above else f">= {minimum}"
            raise ValueError(
                f"must be {low}" + (f" and <= {maximum}" if maximum != float("inf") else "")
            )
        return value

    return parse


def boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def amqp_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError("expected amqp://user:password@host:port/vhost")
    return raw


def absolute_path(raw: str) -> str:
    if not os.path.isabs(raw):
        raise ValueError("expected an absolute path")
    return raw


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


E = TypeVar("E", bound=Enum)


def choice(kind: type[E]) -> Callable[[str], E]:
    """One of an enum's values."""

    def parse(raw: str) -> E:
        try:
            return kind(raw)
        except ValueError:
            choices = ", ".join(str(m.value) for m in kind)
            raise ValueError(f"expected one of {choices}") from None

    return parse


def listed(
    item: Callable[[str], Any] = text, *, into: Callable[[Iterable[Any]], Any] = frozenset
) -> Callable[[str], Any]:
    """Comma-separated items, each parsed by ``item``, blanks skipped (default: a frozenset)."""

    def parse(raw: str) -> Any:
        return into(item(part.strip()) for part in raw.split(",") if part.strip())

    return parse
