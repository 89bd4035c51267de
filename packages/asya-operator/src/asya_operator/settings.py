"""Operator settings, from the environment, validated at start."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["OperatorSettings", "SettingsError"]


class SettingsError(Exception):
    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"expected a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(name, f"must be > 0, got {raw!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    rabbitmq_url: str
    namespace: str = "default"
    identity: str = ""
    watch_namespaces: tuple[str, ...] = ()
    resync: float = 300.0
    leader_election: bool = True
    lease_duration: int = 15
    workers: int = 4
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        url = env.get("ASYA_RABBITMQ_URL", "").strip()
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise SettingsError(
                "ASYA_RABBITMQ_URL", "expected amqp://user:password@host:port/vhost"
            )
        election = env.get("ASYA_LEADER_ELECTION", "true").strip().lower()
        if election not in ("true", "false"):
            raise SettingsError("ASYA_LEADER_ELECTION", f"expected true or false, got {election!r}")
        workers_raw = env.get("ASYA_OPERATOR_WORKERS", "4").strip() or "4"
        if not workers_raw.isdigit() or not 1 <= int(workers_raw) <= 64:
            raise SettingsError("ASYA_OPERATOR_WORKERS", f"expected 1..64, got {workers_raw!r}")
        level = (env.get("ASYA_LOG_LEVEL", "INFO").strip() or "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(
                "ASYA_LOG_LEVEL", f"expected DEBUG, INFO, WARNING or ERROR, got {level!r}"
            )
        watch = tuple(
            n.strip() for n in env.get("ASYA_WATCH_NAMESPACES", "").split(",") if n.strip()
        )
        return cls(
            rabbitmq_url=url,
            namespace=env.get("ASYA_OPERATOR_NAMESPACE", "").strip() or "default",
            identity=env.get("ASYA_OPERATOR_POD_NAME", "").strip() or socket.gethostname(),
            watch_namespaces=watch,
            resync=_positive(env, "ASYA_RESYNC_SECONDS", 300.0),
            leader_election=election == "true",
            lease_duration=int(_positive(env, "ASYA_LEASE_SECONDS", 15)),
            workers=int(workers_raw),
            log_level=level,
        )
