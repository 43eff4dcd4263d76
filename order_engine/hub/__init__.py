"""Event fan-out: in-memory (one process) or Redis (replicas)."""

from order_engine.hub.base import Hub, LocalFanout, Subscription
from order_engine.hub.memory import MemoryHub

__all__ = ["Hub", "LocalFanout", "MemoryHub", "Subscription"]
