"""order_engine: best-execution routing of swap orders with live WebSocket streaming."""

__version__ = "0.1.0"
