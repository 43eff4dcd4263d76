"""Optional API keys: who is calling. Keys are kept as SHA-256 digests, never in clear."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from order_engine.api.errors import ApiError

CLIENT = web.RequestKey("client", str)  # the API key's name, set when authentication is on
# Liveness and readiness answer load balancers and orchestrators, which hold no key; the
# dashboard's page and assets hold no data (the page asks for a key to fetch any).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})
PUBLIC_PREFIX = "/static/"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str) -> tuple[str, str]:
    """A fresh random key and its config entry `name:<digest>`."""
    key = secrets.token_urlsafe(32)
    return key, f"{name}:{digest(key)}"


class ApiKeys:
    def __init__(self, entries: Sequence[str]) -> None:
        self._names = {}
        for entry in entries:
            name, _, key_digest = entry.partition(":")
            self._names[key_digest] = name

    @property
    def enabled(self) -> bool:
        return bool(self._names)

    def client(self, key: str) -> str | None:
        # The lookup is by digest: timing can tell nothing about the key itself.
        return self._names.get(digest(key))


def auth_middleware(keys: ApiKeys) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if keys.enabled and not is_public(request.path):
            key = request.headers.get("x-api-key")
            if key is None and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
                key = request.query.get("apiKey")  # browsers cannot set WebSocket headers
            client = keys.client(key) if key else None
            if client is None:
                raise ApiError(
                    401,
                    "unauthorized",
                    "a valid API key is required (header x-api-key)",
                    headers={"WWW-Authenticate": 'ApiKey header="x-api-key"'},
                )
            request[CLIENT] = client
        return await handler(request)

    return authenticate
