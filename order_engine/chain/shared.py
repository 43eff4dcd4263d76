"""What the chain service's handlers share: the market they serve and their refusal."""

from __future__ import annotations

from aiohttp import web

from order_engine.venues.market import SimulatedMarket

MARKET = web.AppKey("market", SimulatedMarket)


class Refusal(Exception):
    """A request the service will not serve, with its HTTP status and error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
