"""What the test helpers read from the environment, through asya-protocol's settings mechanism.

One frozen class, read afresh on each call (a test may set a variable with ``monkeypatch``), and
:func:`inherited`, the documented exception: a child process starts from the parent's whole
environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from asya_protocol.settings import load, text, var

__all__ = ["AMQP_ENV", "ASSETS_ENV", "DATABASE_ENV", "ServiceEnvironment", "current", "inherited"]

AMQP_ENV = "ASYA_TEST_AMQP_URL"
DATABASE_ENV = "ASYA_TEST_DATABASE_URL"
ASSETS_ENV = "KUBEBUILDER_ASSETS"


def _ci(raw: str) -> bool:
    return raw.lower() not in ("0", "false", "no")


@dataclass(frozen=True, kw_only=True)
class ServiceEnvironment:
    ci: bool = var("CI", _ci, default=False)
    """CI is set (not to 0/false/no): a missing service fails a test instead of skipping it."""
    amqp_url: str = var(AMQP_ENV, text, default="")
    database_url: str = var(DATABASE_ENV, text, default="")
    rabbitmq_image: str = var("ASYA_TEST_RABBITMQ_IMAGE", text, default="rabbitmq:4-management")
    postgres_image: str = var("ASYA_TEST_POSTGRES_IMAGE", text, default="postgres:17")
    kubebuilder_assets: str = var(ASSETS_ENV, text, default="")


def current() -> ServiceEnvironment:
    """The test environment as it is now."""
    return load(ServiceEnvironment)


def inherited(**overrides: str) -> dict[str, str]:
    """The whole environment for a child process, with ``overrides`` applied."""
    env = dict(os.environ)
    env.update(overrides)
    return env
