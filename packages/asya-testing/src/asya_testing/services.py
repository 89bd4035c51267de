"""Where a test gets its real services from.

Order: the URL in the environment (``ASYA_TEST_AMQP_URL``, ``ASYA_TEST_DATABASE_URL``); else a
testcontainers container when a Docker-compatible engine answers; else the test is skipped with
the reason, or fails when ``CI`` is set, so that missing infrastructure can never pass silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

__all__ = ["ServiceUnavailable", "in_ci", "service_url", "unavailable"]

AMQP_ENV = "ASYA_TEST_AMQP_URL"
DATABASE_ENV = "ASYA_TEST_DATABASE_URL"


class ServiceUnavailable(Exception):
    """A test service could be found neither in the environment nor through Docker."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
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


@contextmanager
def _rabbitmq_container() -> Iterator[_Container]:
    from testcontainers.rabbitmq import RabbitMqContainer  # noqa: PLC0415

    image = os.environ.get("ASYA_TEST_RABBITMQ_IMAGE", "rabbitmq:4-management")
    with RabbitMqContainer(image) as rabbit:
        params = rabbit.get_connection_params()
        creds = params.credentials
        yield _Container(f"amqp://{creds.username}:{creds.password}@{params.host}:{params.port}/")


@contextmanager
def _postgres_container() -> Iterator[_Container]:
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    image = os.environ.get("ASYA_TEST_POSTGRES_IMAGE", "postgres:17")
    with PostgresContainer(image, driver=None) as pg:
        yield _Container(pg.get_connection_url())


@contextmanager
def service_url(kind: str) -> Iterator[str]:
    """Yield the URL of a real ``amqp`` or ``postgres`` service, or skip/fail as documented."""
    env, starter = {
        "amqp": (AMQP_ENV, _rabbitmq_container),
        "postgres": (DATABASE_ENV, _postgres_container),
    }[kind]
    if url := os.environ.get(env):
        yield url
        return
    why = _docker_answers()
    if why is not None:
        unavailable(f"{env} is not set and {why}")
    with starter() as container:
        yield container.url
