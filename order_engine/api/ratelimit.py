"""Rate limits per client: a token bucket for requests, a cap on open WebSockets."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from order_engine.api.auth import CLIENT
from order_engine.api.errors import ApiError


def client_key(request: web.Request, trust_forwarded_for: bool) -> str:
    """The API key's name, else the client's address (the first hop of X-Forwarded-For
    when a trusted load balancer sets it)."""
    client = request.get(CLIENT)
    if client is not None:
        return f"key:{client}"
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return f"ip:{first}"
    return f"ip:{request.remote}"


class TokenBuckets:
    """`rate` tokens per second up to `burst`, per client. Idle clients are forgotten first
    when there are too many (a forgotten client starts again with a full bucket)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, client: str) -> float:
        """0 if a request may go now (a token is spent), else seconds until one may."""
        now = self._clock()
        tokens, at = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self._rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


def rate_limit_middleware(buckets: TokenBuckets, trust_forwarded_for: bool) -> Middleware:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in ("/healthz", "/readyz"):
            wait = buckets.take(client_key(request, trust_forwarded_for))
            if wait > 0:
                raise ApiError(
                    429,
                    "rate_limited",
                    "too many requests; slow down",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return await handler(request)

    return limit
