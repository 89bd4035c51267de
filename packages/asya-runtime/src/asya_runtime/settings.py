"""Runtime settings, read once from the environment at start and validated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from asya_protocol import DEFAULT_MAX_FRAME_SIZE, HandlerMode

from .errors import SettingsError

__all__ = ["DEFAULT_SOCKET_PATH", "RuntimeSettings"]

DEFAULT_SOCKET_PATH = "/var/run/asya/runtime.sock"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"expected an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(name, f"must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"expected a number of seconds, got {raw!r}") from None
    if not value >= minimum:
        raise SettingsError(name, f"must be >= {minimum}, got {raw}")
    return value


@dataclass(frozen=True, kw_only=True)
class RuntimeSettings:
    """Every setting of the runtime. Build with :meth:`from_env`."""

    handler: str
    socket_path: str = DEFAULT_SOCKET_PATH
    mode: HandlerMode = HandlerMode.PAYLOAD
    concurrency: int = 4
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    shutdown_grace: float = 30.0
    traceback_limit: int = 4000
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if env is None else env
        handler = env.get("ASYA_HANDLER", "").strip()
        if not handler:
            raise SettingsError(
                "ASYA_HANDLER", "not set; name the handler as package.module:function"
            )
        mode_raw = env.get("ASYA_HANDLER_MODE", "payload") or "payload"
        try:
            mode = HandlerMode(mode_raw)
        except ValueError:
            choices = ", ".join(m.value for m in HandlerMode)
            raise SettingsError(
                "ASYA_HANDLER_MODE", f"{mode_raw!r} is not one of {choices}"
            ) from None
        socket_path = env.get("ASYA_SOCKET_PATH", "") or DEFAULT_SOCKET_PATH
        if not os.path.isabs(socket_path):
            raise SettingsError(
                "ASYA_SOCKET_PATH", f"must be an absolute path, got {socket_path!r}"
            )
        if len(os.fsencode(socket_path)) > 107:
            raise SettingsError(
                "ASYA_SOCKET_PATH", "longer than the 107 bytes a Unix socket path allows"
            )
        level = (env.get("ASYA_LOG_LEVEL", "INFO") or "INFO").upper()
        if level not in _LOG_LEVELS:
            choices = ", ".join(_LOG_LEVELS)
            raise SettingsError("ASYA_LOG_LEVEL", f"{level!r} is not one of {choices}")
        return cls(
            handler=handler,
            socket_path=socket_path,
            mode=mode,
            concurrency=_int(env, "ASYA_RUNTIME_CONCURRENCY", 4, minimum=1),
            max_frame_size=_int(env, "ASYA_MAX_FRAME_SIZE", DEFAULT_MAX_FRAME_SIZE, minimum=1024),
            shutdown_grace=_float(env, "ASYA_SHUTDOWN_GRACE", 30.0, minimum=0.0),
            traceback_limit=_int(env, "ASYA_TRACEBACK_LIMIT", 4000, minimum=0),
            log_level=level,
        )
