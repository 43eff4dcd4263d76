"""What the engine tells its callers when it cannot go on."""

from __future__ import annotations

from enum import StrEnum


class OrderLost(Exception):
    """A write was fenced off: another replica owns the order now (or this replica's view
    of it is stale). The stored state decides what happens next."""


class Unavailable(StrEnum):
    QUEUE_FULL = "queue_full"
    SHUTTING_DOWN = "shutting_down"


class EngineUnavailable(Exception):
    """The engine cannot take orders now; nothing was stored. `retry_after` in seconds."""

    def __init__(self, code: Unavailable, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
