"""asya-gateway: the MCP and HTTP front door of Asya pipelines."""

from .__about__ import __version__
from .app import GatewayApp, create_app
from .broker import GatewayBroker, PublishFailed
from .settings import GatewaySettings, SettingsError
from .tools import Tool, ToolsFileError, load_tools, parse_tools

__all__ = [
    "GatewayApp",
    "GatewayBroker",
    "GatewaySettings",
    "PublishFailed",
    "SettingsError",
    "Tool",
    "ToolsFileError",
    "__version__",
    "create_app",
    "load_tools",
    "parse_tools",
]
