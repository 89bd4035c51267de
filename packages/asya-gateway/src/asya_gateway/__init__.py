"""asya-gateway: the MCP and HTTP front door of Asya pipelines."""

from .__about__ import __version__
from .app import GatewayApp, create_app
from .broker import GatewayBroker
from .errors import (
    GatewayError,
    InvalidArguments,
    JobFinished,
    NoSuchJob,
    PublishFailed,
    SettingsError,
    StartFailed,
    UnknownTool,
)
from .jobstate import JobStatus
from .memory import InProcessQueues, MemoryBroker
from .settings import AuthMode, GatewaySettings, database_url
from .tools import Tool, ToolsFileError, load_tools, parse_tools

__all__ = [
    "AuthMode",
    "GatewayApp",
    "GatewayBroker",
    "GatewayError",
    "GatewaySettings",
    "InProcessQueues",
    "InvalidArguments",
    "JobFinished",
    "JobStatus",
    "MemoryBroker",
    "NoSuchJob",
    "PublishFailed",
    "SettingsError",
    "StartFailed",
    "Tool",
    "ToolsFileError",
    "UnknownTool",
    "__version__",
    "create_app",
    "database_url",
    "load_tools",
    "parse_tools",
]
