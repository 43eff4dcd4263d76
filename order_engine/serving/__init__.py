"""The server's edge: connections admitted or refused, request heads timed, and aiohttp's
own error answers in the API's JSON shape, below any request handler."""

from order_engine.serving.runner import serve, serving

__all__ = ["serve", "serving"]
