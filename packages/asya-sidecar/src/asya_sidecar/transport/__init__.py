"""Transports: where deliveries come from and where decisions are published."""

from .base import Delivery, Transport
from .memory import MemoryBroker, MemoryTransport

__all__ = ["Delivery", "MemoryBroker", "MemoryTransport", "Transport"]
