"""Shared test helpers for Asya's packages (a pytest plugin, loaded by entry point)."""

from .__about__ import __version__
from .amqp import AmqpClient, AmqpNames, isolated_names
from .docs import python_blocks, run_python_blocks
from .postgres import fresh_database
from .services import ServiceUnavailable, in_ci, service_url, unavailable

__all__ = [
    "AmqpClient",
    "AmqpNames",
    "ServiceUnavailable",
    "__version__",
    "fresh_database",
    "in_ci",
    "isolated_names",
    "python_blocks",
    "run_python_blocks",
    "service_url",
    "unavailable",
]
