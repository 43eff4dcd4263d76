"""Who may come in, before any handler runs: rate limits, then API keys.

Requests that carry no valid key (a wrong key, none, or a public page) spend their
address's bucket, so guessing keys is limited like any other traffic; a valid key spends
its own bucket only. A request is refused with 429 before its key counts at all while its
address's bucket is empty, even when the key is valid: otherwise 200 against 429 would tell
a guesser which guess was right, at any rate. So another client's failures can starve a
valid key only from the same address (the same NAT, or a proxy whose hops are not trusted),
and only while they keep that address's bucket empty.

`Expect: 100-continue` is answered by the route's expect handler, before any middleware:
routes that take a body get `expect`, which admits the request (or refuses it without
asking for the body) before it lets the client send the body.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from order_engine.api.auth import CLIENT, ApiKeys, is_public, presented_key, unauthorized
from order_engine.api.errors import ApiError, error_response
from order_engine.api.ratelimit import UNLIMITED_PATHS, Limiter, address_key, rate_limited

ADMITTED = web.RequestKey("admitted", bool)  # by the expect handler: not counted twice


class Edge:
    def __init__(self, keys: ApiKeys, limiter: Limiter | None, proxy_hops: int) -> None:
        self._keys = keys
        self._limiter = limiter
        self._proxy_hops = proxy_hops

    async def admit(self, request: web.Request) -> None:
        """Raises 429 or 401; sets the request's CLIENT when it has a valid key."""
        needs_key = self._keys.enabled and not is_public(request.path)
        client = None
        if needs_key:
            key = presented_key(request)
            client = self._keys.client(key) if key else None
        if self._limiter is not None and request.path not in UNLIMITED_PATHS:
            address = address_key(request, self._proxy_hops)
            if client is not None:
                wait = await self._limiter.take(f"key:{client}", gate=address)
            else:
                wait = await self._limiter.take(address)
            if wait > 0:
                raise rate_limited(wait)
        if needs_key and client is None:
            raise unauthorized()
        if client is not None:
            request[CLIENT] = client
        request[ADMITTED] = True

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.get(ADMITTED, False):
            await self.admit(request)
        return await handler(request)

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """The route's expect handler: middlewares do not run around it, so refusals are
        answered here, as JSON, and the connection closes (the body never comes)."""
        try:
            if request.headers.get("Expect", "").lower() != "100-continue":
                raise ApiError(417, "expectation_failed", "only 'Expect: 100-continue' is known")
            await self.admit(request)
        except ApiError as exc:
            refusal = error_response(exc)
            refusal.force_close()
            return refusal
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer's own head and body come next
        return None
