"""The server's open WebSockets: counted per client, closed together at shutdown, and cut
off when their peer stops reading."""

from __future__ import annotations

import asyncio

from aiohttp import WSCloseCode, web

from order_engine.api.errors import ApiError

CLOSE_GOING_AWAY = WSCloseCode.GOING_AWAY  # 1001: server shutting down
CLOSE_TRY_AGAIN = WSCloseCode.TRY_AGAIN_LATER  # 1013: server cannot serve now
CLOSE_TIMEOUT_S = 2.0  # a peer that has not answered a close by then is cut off


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
