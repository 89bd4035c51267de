"""Where a test gets its real services from.

Order: the URL in the environment (``ASYA_TEST_AMQP_URL``, ``ASYA_TEST_DATABASE_URL``); else a
testcontainers container when a Docker-compatible engine answers; else the test is skipped with
the reason, or fails when ``CI`` is set, so that missing infrastructure can never pass silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

from .environment import AMQP_ENV, DATABASE_ENV, current

__all__ = ["ServiceUnavailable", "in_ci", "service_url", "unavailable"]


class ServiceUnavailable(Exception):
    """A test service could be found neither in the environment nor through Docker."""


def in_ci() -> bool:
    return current().ci


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI: missing infrastructure is an error there."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _docker_answers() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        import docker  # noqa: PLC0415 - optional dependency
    except ImportError:
        return "the 'docker'/'testcontainers' packages are not installed"
    try:
        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"; reported below
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    return None


@dataclass
class _Container:
    url: str


def _loopback_only(container: Any, port: int) -> None:
    """Publish ``port`` on the host's 127.0.0.1 only; testcontainers' default is every interface.
    (The Docker API takes a ``(host_ip, host_port)`` pair; ``None`` picks a free port.)"""
    container.ports[str(port)] = ("127.0.0.1", None)


def _host(container: Any) -> str:
    """The published port is on 127.0.0.1; ``localhost`` could resolve to ::1 first."""
    host: str = container.get_container_host_ip()
    return "127.0.0.1" if host == "localhost" else host


@contextmanager
def _quiet_testcontainers() -> Iterator[None]:
    """testcontainers' own modules use its deprecated ``@wait_container_is_ready``; that warning
    is theirs, not ours, and the suite turns warnings into errors."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"The @wait_container_is_ready decorator", category=DeprecationWarning
        )
        yield


@contextmanager
def _started(container: Any) -> Iterator[None]:
    try:
        with _quiet_testcontainers():
            container.start()
        yield
    finally:
        container.stop()  # also after a failed start: the container may exist already


@contextmanager
def _rabbitmq_container() -> Iterator[_Container]:
    with _quiet_testcontainers():
        try:
            from testcontainers.community.rabbitmq import RabbitMqContainer  # noqa: PLC0415
        except ImportError:  # testcontainers < 4.14 has no community namespace
            from testcontainers.rabbitmq import RabbitMqContainer  # noqa: PLC0415

    rabbit = RabbitMqContainer(current().rabbitmq_image)
    _loopback_only(rabbit, rabbit.port)
    with _started(rabbit):
        port = rabbit.get_exposed_port(rabbit.port)
        yield _Container(f"amqp://{rabbit.username}:{rabbit.password}@{_host(rabbit)}:{port}/")


@contextmanager
def _postgres_container() -> Iterator[_Container]:
    with _quiet_testcontainers():
        try:
            from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415
        except ImportError:  # testcontainers < 4.14 has no community namespace
            from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    pg = PostgresContainer(current().postgres_image, driver=None)
    _loopback_only(pg, pg.port)
    with _started(pg):
        yield _Container(pg.get_connection_url(host=_host(pg)))


@contextmanager
def service_url(kind: str) -> Iterator[str]:
    """Yield the URL of a real ``amqp`` or ``postgres`` service, or skip/fail as documented."""
    env, starter = {
        "amqp": (AMQP_ENV, _rabbitmq_container),
        "postgres": (DATABASE_ENV, _postgres_container),
    }[kind]
    found = current()
    if url := (found.amqp_url if kind == "amqp" else found.database_url):
        yield url
        return
    why = _docker_answers()
    if why is not None:
        unavailable(f"{env} is not set and {why}")
    with starter() as container:
        yield container.url
