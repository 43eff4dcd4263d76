"""Rate limits per client: token buckets behind a small Protocol (kept here in memory for one
process; `ratelimit_redis` shares them between replicas), and the key a client is counted by."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from order_engine.api.auth import CLIENT
from order_engine.api.errors import ApiError
from order_engine.config import LimitSettings

# Load balancers and orchestrators probe these; they are never limited.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})


class Limiter(Protocol):
    async def take(self, client: str, *, gate: str | None = None) -> float:
        """0 if `client` may make a request now (one of its tokens is spent), else seconds
        until it may. With `gate`: refused too while the bucket `gate` is empty, which is
        only looked at, not spent."""
        ...

    async def close(self) -> None: ...


def client_key(request: web.Request, proxy_hops: int) -> str:
    """The API key's name, else the client's address (`address_key`)."""
    client = request.get(CLIENT)
    if client is not None:
        return f"key:{client}"
    return address_key(request, proxy_hops)


def address_key(request: web.Request, proxy_hops: int) -> str:
    """The client's address: with `proxy_hops` trusted proxies in front, the X-Forwarded-For
    entry the outermost of them appended (0: the peer's)."""
    if proxy_hops > 0:
        # Proxies append to what the client sent, so only the last `proxy_hops` entries
        # are theirs; anything to the left is the client's to forge.
        hops = ",".join(request.headers.getall("X-Forwarded-For", ())).split(",")
        if len(hops) >= proxy_hops:
            address = _address(hops[-proxy_hops])
            if address is not None:
                return f"ip:{address}"
    return f"ip:{request.remote}"


def _address(hop: str) -> str | None:
    hop = hop.strip()
    if "%" in hop:  # an IPv6 zone is free text: it would make any string a key
        return None
    try:
        # Canonical, so one address spelled differently is still one client.
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None


class TokenBuckets:
    """`rate` tokens per second up to `burst`, per client. Idle clients are forgotten first
    when the table outgrows `max_bytes` (a forgotten client starts again with a full
    bucket)."""

    # A bucket's share of memory besides its key: the dict slot, the tuple, two floats.
    ENTRY_BYTES = 200

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def take(self, client: str) -> float:
        """0 if a request may go now (a token is spent), else seconds until one may."""
        now = self._clock()
        known = self._buckets.pop(client, None)
        tokens, at = known if known is not None else (self._burst, now)
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self._rate
        self._buckets[client] = (tokens, now)
        if known is None:
            self._bytes += self._cost(client)
            # The newest stays even when it alone is over: its limit must still hold.
            while self._bytes > self._max_bytes and len(self._buckets) > 1:
                idle, _ = self._buckets.popitem(last=False)
                self._bytes -= self._cost(idle)
        return wait

    def shut_for(self, client: str) -> float:
        """Seconds until `client` has a token (0: it has one now); nothing is spent."""
        known = self._buckets.get(client)
        if known is None:
            return 0.0
        tokens, at = known
        tokens = min(self._burst, tokens + (self._clock() - at) * self._rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def _cost(self, client: str) -> int:
        return len(client) + self.ENTRY_BYTES


class MemoryLimiter:
    """This process's own buckets: the limiter of a single replica (no Redis)."""

    def __init__(self, buckets: TokenBuckets) -> None:
        self.buckets = buckets

    async def take(self, client: str, *, gate: str | None = None) -> float:
        if gate is not None:
            shut = self.buckets.shut_for(gate)
            if shut > 0:
                return max(shut, self.buckets.shut_for(client))
        return self.buckets.take(client)

    async def close(self) -> None:
        return None


def rate_limited(wait: float) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        "too many requests; slow down",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def build_limiter(
    limits: LimitSettings, redis_url: str, *, on_fallback: Callable[[], None]
) -> Limiter | None:
    """The hub's Redis holds the buckets when there is one (every replica shares them);
    otherwise, or while Redis fails, this process's memory does. None: no limit."""
    if limits.requests_per_s <= 0:
        return None
    local = MemoryLimiter(TokenBuckets(limits.requests_per_s, limits.burst))
    if not redis_url:
        return local
    from order_engine.api.ratelimit_redis import RedisLimiter

    return RedisLimiter(
        redis_url,
        limits.requests_per_s,
        limits.burst,
        prefix=limits.redis_prefix,
        fallback=local,
        on_fallback=on_fallback,
    )
