"""Token buckets shared by every replica, in Redis: one atomic script, one round trip a
request. Redis keeps no bucket longer than it takes to refill (a missing bucket is full).

If Redis fails (down, slow past `timeout_s`), the limit does not: this replica falls back
to its own in-memory buckets (the limit per replica, as without Redis) for `retry_s`, then
asks Redis again; the outage is logged once and counted. A request is never refused, nor
answered 500, because Redis is down."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from order_engine.api.ratelimit import Limiter

log = logging.getLogger("order_engine.api.ratelimit")

# KEYS[1]: the bucket to spend; KEYS[2] (optional): a gate, only looked at. ARGV: rate per
# second, burst, ms a bucket lives untouched. Returns the wait in seconds ("0": admitted), as
# a string: Redis would truncate a Lua number to an integer. Redis's clock, not the
# replicas': theirs may disagree.
TAKE = """
local rate, burst, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function level(key)
  local v = redis.call('HMGET', key, 'tokens', 'at')
  if not v[1] then return burst end
  return math.min(burst, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate)
end
local wait = 0
if KEYS[2] then
  local gate = level(KEYS[2])
  if gate < 1 then wait = (1 - gate) / rate end
end
local tokens = level(KEYS[1])
if tokens < 1 then
  wait = math.max(wait, (1 - tokens) / rate)
end
if wait > 0 then return tostring(wait) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ttl)
return '0'
"""


class RedisLimiter:
    def __init__(
        self,
        url: str,
        rate: float,
        burst: int,
        *,
        prefix: str,
        fallback: Limiter,
        on_fallback: Callable[[], None] = lambda: None,
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        max_connections: int = 64,
    ) -> None:
        # A pool that makes a request wait (up to the timeout) for a free connection: the
        # default pool raises at once past its size, which busy moments, the very ones a
        # limit is for, would take for Redis failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # A pooled connection that died with the server fails once; the retry reconnects.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self._redis = aioredis.Redis.from_pool(pool)  # closed with the client
        self._take = self._redis.register_script(TAKE)
        self._prefix = prefix
        # A bucket is full again after burst / rate seconds: Redis may forget it then.
        self._args = (rate, burst, math.ceil(burst / rate * 1000) + 1000)
        self._fallback = fallback
        self._on_fallback = on_fallback
        self._retry_s = retry_s
        self._down_until = 0.0
        self._failing = False

    async def take(self, client: str, *, gate: str | None = None) -> float:
        if self._down_until > time.monotonic():
            return await self._local(client, gate)
        keys = [self._prefix + client]
        if gate is not None:
            keys.append(self._prefix + gate)
        try:
            wait = await self._take(keys=keys, args=self._args)
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self._retry_s
            if not self._failing:
                self._failing = True
                log.warning(
                    "rate limits: Redis failed (%s); each replica limits alone until it answers",
                    exc,
                )
            return await self._local(client, gate)
        if self._failing:
            self._failing = False
            log.info("rate limits: Redis answers again; the limits are shared again")
        return float(wait)

    async def _local(self, client: str, gate: str | None) -> float:
        self._on_fallback()
        return await self._fallback.take(client, gate=gate)

    async def close(self) -> None:
        await self._redis.aclose()
