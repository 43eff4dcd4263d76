"""The server's open WebSockets: counted per client, closed together at shutdown, and cut
off when their peer stops reading."""

from __future__ import annotations

import asyncio
import base64
import binascii

from aiohttp import WSCloseCode, hdrs, web

from order_engine.api.auth import subprotocol_refusal
from order_engine.api.errors import ApiError

CLOSE_GOING_AWAY = WSCloseCode.GOING_AWAY  # 1001: server shutting down
CLOSE_TRY_AGAIN = WSCloseCode.TRY_AGAIN_LATER  # 1013: server cannot serve now
CLOSE_TIMEOUT_S = 2.0  # a peer that has not answered a close by then is cut off
# What aiohttp's handshake takes; 13 is RFC 6455's, the one a refusal names.
WEBSOCKET_VERSIONS = ("13", "8", "7")


class SlowConsumer(Exception):
    """The client did not take a message within the send timeout."""


class Connections:
    """Open WebSockets, so shutdown can close every one with 1001, and per client, so one
    client cannot hold them all (`per_client` 0: no cap)."""

    def __init__(self, per_client: int = 0) -> None:
        self._open: dict[web.WebSocketResponse, str] = {}
        # The upgraded request of each socket: its transport is what a peer that stops
        # reading is cut off by.
        self._requests: dict[web.WebSocketResponse, web.BaseRequest] = {}
        self._per_client = per_client
        self._counts: dict[str, int] = {}

    def admit(self, client: str) -> None:
        """Take one of the client's places before the upgrade (429 when none is left);
        `add` then holds it, `release` gives it back if the upgrade fails."""
        count = self._counts.get(client, 0)
        if self._per_client and count >= self._per_client:
            raise ApiError(
                429,
                "too_many_websockets",
                f"at most {self._per_client} WebSockets at once per client",
                headers={"Retry-After": "1"},
            )
        self._counts[client] = count + 1

    def release(self, client: str) -> None:
        left = self._counts[client] - 1
        if left:
            self._counts[client] = left
        else:
            del self._counts[client]

    def add(
        self, ws: web.WebSocketResponse, client: str, request: web.BaseRequest | None = None
    ) -> None:
        self._open[ws] = client
        if request is not None:
            self._requests[ws] = request

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._requests.pop(ws, None)
        client = self._open.pop(ws, None)
        if client is not None:
            self.release(client)
        # aiohttp keeps the error of a close that failed on a lost connection; its traceback
        # (and its context's: the end of the stream it was handling) holds frames whose
        # `self` is the response: a cycle, with the request and the connection's handler,
        # that only the cyclic collector frees.
        error: BaseException | None = ws.exception()
        while error is not None:
            error.__traceback__ = None
            error = error.__context__

    def __len__(self) -> int:
        return len(self._open)

    async def close_all(self, code: int, message: bytes) -> None:
        sockets = [(ws, self._requests.get(ws)) for ws in self._open]
        await asyncio.gather(
            *(close_socket(ws, request, code, message) for ws, request in sockets),
            return_exceptions=True,
        )


async def close_socket(
    ws: web.WebSocketResponse, request: web.BaseRequest | None, code: int, message: bytes
) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=message)
    except TimeoutError:
        # A peer that does not read cannot receive the close frame either.
        if request is not None:
            abort_connection(request)


def abort_connection(request: web.BaseRequest) -> None:
    """Drop the connection with what is still queued for it: a graceful close would wait
    for a peer that does not read to take that first, which may be never."""
    transport = request.transport
    if transport is not None:  # None: the connection is already gone
        transport.abort()


def check_handshake(ws: web.WebSocketResponse, request: web.BaseRequest) -> None:
    """Raises 400 naming the header at fault unless `request` is a WebSocket handshake that
    `ws` can take: aiohttp's own check says only yes or no."""
    refusal = handshake_refusal(request)
    if refusal is None and not ws.can_prepare(request).ok:  # a check aiohttp added since
        refusal = ApiError(400, "invalid_handshake", "the WebSocket handshake is not valid")
    if refusal is not None:
        raise refusal


def handshake_refusal(request: web.BaseRequest) -> ApiError | None:
    """Why `request` is no valid WebSocket handshake, in the order aiohttp checks (None:
    it is one)."""
    headers = request.headers
    if headers.get(hdrs.UPGRADE, "").lower().strip() != "websocket":
        return ApiError(
            400,
            "websocket_required",
            "this endpoint speaks WebSocket: send an Upgrade request (Upgrade: websocket)",
        )
    tokens = {token.strip().lower() for token in headers.get(hdrs.CONNECTION, "").split(",")}
    if "upgrade" not in tokens:
        return _header_refusal(request, hdrs.CONNECTION, "must include 'Upgrade'")
    version = headers.get(hdrs.SEC_WEBSOCKET_VERSION)
    if version not in WEBSOCKET_VERSIONS:
        return _header_refusal(
            request,
            hdrs.SEC_WEBSOCKET_VERSION,
            f"must be {WEBSOCKET_VERSIONS[0]}",
            # RFC 6455 4.2.2: a refused version is answered with the ones understood.
            {hdrs.SEC_WEBSOCKET_VERSION: WEBSOCKET_VERSIONS[0]},
        )
    key = headers.get(hdrs.SEC_WEBSOCKET_KEY)
    try:
        valid = bool(key) and len(base64.b64decode(key or "")) == 16
    except binascii.Error:
        valid = False
    if not valid:
        return _header_refusal(request, hdrs.SEC_WEBSOCKET_KEY, "must be 16 bytes in base64")
    return subprotocol_refusal(request)


def _header_refusal(
    request: web.BaseRequest, name: str, must: str, headers: dict[str, str] | None = None
) -> ApiError:
    if name in request.headers:
        code, message = "invalid_header", f"{name} {must}, not {request.headers[name][:64]!r}"
    else:
        code, message = "missing_header", f"a WebSocket handshake needs {name}: it {must}"
    return ApiError(400, code, message, field=name, headers=headers)
