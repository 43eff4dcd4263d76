"""What the engine tells its callers when it cannot go on."""

from __future__ import annotations

from enum import StrEnum

from order_engine.orders import Order


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


class OrderNotFound(LookupError):
    """No such order, or not one the asking client may see."""


class NotCancellable(Exception):
    """The order's execution began (or it is finished): it runs to its end."""

    def __init__(self, order: Order) -> None:
        super().__init__(f"order {order.order_id} is {order.status.value}: too late to cancel")
        self.order = order
