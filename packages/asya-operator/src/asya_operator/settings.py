"""Operator settings, from the environment, validated at start (asya-protocol's one mechanism)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from asya_protocol import SettingsError
from asya_protocol import settings as parsers
from asya_protocol.settings import load, var

__all__ = ["OperatorSettings", "SettingsError"]


T = TypeVar("T")


def _or_off(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """``off`` (None), else what ``parse`` makes of the value."""

    def parse_or_off(raw: str) -> T | None:
        return None if raw.lower() == "off" else parse(raw)

    return parse_or_off


def _write_or_off(value: object) -> str:
    return "off" if value is None else str(value)


def _given(raw: str) -> bool:
    """True for any non-blank value (a blank one counts as not set)."""
    return bool(raw)


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    rabbitmq_url: str = var(
        "ASYA_RABBITMQ_URL",
        parsers.amqp_url,
        required="expected amqp://user:password@host:port/vhost",
    )
    namespace: str = var("ASYA_OPERATOR_NAMESPACE", parsers.text, default="default")
    """Where the leader-election Lease lives."""
    identity: str = var("ASYA_OPERATOR_POD_NAME", parsers.text, default="")
    """This replica's identity in the Lease; :meth:`from_env` makes a blank one the host name."""
    watch_namespaces: tuple[str, ...] = var(
        "ASYA_WATCH_NAMESPACES", parsers.listed(into=tuple), default=()
    )
    resync: float = var("ASYA_RESYNC_SECONDS", parsers.number(0.0, above=True), default=300.0)
    leader_election: bool = var("ASYA_LEADER_ELECTION", parsers.boolean, default=True)
    lease_duration: int = var("ASYA_LEASE_SECONDS", parsers.integer(1), default=15)
    workers: int = var("ASYA_OPERATOR_WORKERS", parsers.integer(1, 64), default=4)
    log_level: str = var("ASYA_LOG_LEVEL", parsers.log_level, default="INFO")
    http_host: str = var("ASYA_OPERATOR_HTTP_HOST", parsers.text, default="0.0.0.0")  # noqa: S104
    """Where the probe server listens (all interfaces in a pod, for the kubelet)."""
    http_port: int | None = var(
        "ASYA_OPERATOR_HTTP_PORT",
        _or_off(parsers.integer(0, 65535)),
        default=8081,
        write=_write_or_off,
    )
    """The probe server's port (GET /healthz, /readyz); 0 picks a free one; ``off`` (None): none."""
    unhealthy_after: float = var(
        "ASYA_OPERATOR_UNHEALTHY_AFTER", parsers.number(0.0, above=True), default=120.0
    )
    """Seconds a check may fail without a pass before /healthz answers 503 (and the kubelet
    restarts the process)."""
    in_cluster: bool = var("KUBERNETES_SERVICE_HOST", _given, default=False)
    """Set by the kubelet in every pod: use the in-cluster config instead of a kubeconfig."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """Raises :class:`SettingsError` naming the first bad variable."""
        settings = load(cls, env)
        if not settings.identity:
            settings = dataclasses.replace(settings, identity=socket.gethostname())
        return settings
