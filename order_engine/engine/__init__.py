"""The execution engine and the parts it is made of (see `core`)."""

from order_engine.engine.core import Engine, min_out
from order_engine.engine.errors import (
    EngineUnavailable,
    NotCancellable,
    OrderLost,
    OrderNotFound,
    Unavailable,
)
from order_engine.engine.intake import OrderRequest

__all__ = [
    "Engine",
    "EngineUnavailable",
    "NotCancellable",
    "OrderLost",
    "OrderNotFound",
    "OrderRequest",
    "Unavailable",
    "min_out",
]
