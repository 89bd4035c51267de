"""asya-sidecar: moves Asya envelopes from a queue to the runtime and on to the next queue."""

from .__about__ import __version__
from .consumer import Sidecar
from .decision import Decision, Outcome, Outgoing, Process, RoutingContext, after_runtime, inspect
from .errors import RuntimeUnavailable, SettingsError, SidecarError, TransportError, Unroutable
from .factory import amqp_sidecar, memory_sidecar
from .settings import RetryPolicy, SidecarSettings
from .transport import MemoryBroker, MemoryTransport

__all__ = [
    "Decision",
    "MemoryBroker",
    "MemoryTransport",
    "Outcome",
    "Outgoing",
    "Process",
    "RetryPolicy",
    "RoutingContext",
    "RuntimeUnavailable",
    "SettingsError",
    "Sidecar",
    "SidecarError",
    "SidecarSettings",
    "TransportError",
    "Unroutable",
    "__version__",
    "after_runtime",
    "amqp_sidecar",
    "inspect",
    "memory_sidecar",
]
