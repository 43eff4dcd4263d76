"""Optional API keys: who is calling. Keys are kept as SHA-256 digests, never in clear."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from aiohttp import hdrs, web

from order_engine.api.errors import ApiError

CLIENT = web.RequestKey("client", str)  # the API key's name, set when authentication is on
# Liveness and readiness answer load balancers and orchestrators, which hold no key; the
# dashboard's page and assets hold no data (the page asks for a key to fetch any).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})
PUBLIC_PREFIX = "/static/"
# A WebSocket client offers both subprotocols: the server answers the first, which says
# nothing secret, so the key is never echoed back; a browser refuses a handshake whose answer
# names no protocol it offered.
SUBPROTOCOL = "order-engine"
KEY_SUBPROTOCOL_PREFIX = "key."


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


def presented_key(request: web.Request) -> str | None:
    """The key the request carries: header x-api-key; on a WebSocket upgrade (browsers cannot
    set its headers) else a `key.<key>` subprotocol, else the discouraged `?apiKey=`, which
    proxies' access logs record with the URL."""
    key = request.headers.get("x-api-key")
    if key is not None or request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
        return key
    refusal = subprotocol_refusal(request)
    if refusal is not None:
        raise refusal
    for protocol in _offered(request):
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            return protocol[len(KEY_SUBPROTOCOL_PREFIX) :]
    return request.query.get("apiKey")


def subprotocol_refusal(request: web.BaseRequest) -> ApiError | None:
    """A key offered as a subprotocol without `order-engine` beside it is refused, whether
    or not keys are checked: aiohttp's handshake would log the offer (the key) as not
    overlapping, and a browser would drop a handshake that answers none of its protocols."""
    offered = _offered(request)
    if SUBPROTOCOL in offered or not any(p.startswith(KEY_SUBPROTOCOL_PREFIX) for p in offered):
        return None
    return ApiError(
        400, "subprotocol_required", f"offer the subprotocol '{SUBPROTOCOL}' beside the key's"
    )


def _offered(request: web.BaseRequest) -> list[str]:
    # The first header only, as aiohttp's handshake reads it.
    return [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "a valid API key is required (header x-api-key; on a WebSocket, subprotocol "
        f"'{KEY_SUBPROTOCOL_PREFIX}<key>' beside '{SUBPROTOCOL}')",
        headers={"WWW-Authenticate": 'ApiKey header="x-api-key"'},
    )
