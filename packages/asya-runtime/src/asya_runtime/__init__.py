"""asya-runtime: run a user's handler behind the Asya socket protocol.

Handlers import :func:`progress`, :func:`batch`, :func:`streaming`, :func:`final` and
:class:`AsyaError` from here.
"""

from .__about__ import __version__
from .api import progress
from .batching import BatchSpec, batch
from .errors import AsyaError, HandlerLoadError, RuntimeStartError, SettingsError
from .loader import Handler, HandlerKind, load_handler
from .server import RuntimeServer
from .settings import RuntimeSettings
from .streaming import Final, final, streaming

__all__ = [
    "AsyaError",
    "BatchSpec",
    "Final",
    "Handler",
    "HandlerKind",
    "HandlerLoadError",
    "RuntimeServer",
    "RuntimeSettings",
    "RuntimeStartError",
    "SettingsError",
    "__version__",
    "batch",
    "final",
    "load_handler",
    "progress",
    "streaming",
]
