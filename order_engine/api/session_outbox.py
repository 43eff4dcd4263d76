"""A trading session's frames out: one writer, a bounded outbox, and the send timeout every
WebSocket has. A session that stops reading is cut off as any slow consumer is: a frame not
taken within the send timeout drops the connection.

Frames come in bursts (one group commit finishes many orders' stages at once). The writer
sends a burst corked (TCP_CORK, where the system has it): written one by one, the frames
leave together in as few segments as fit, instead of one segment each, with the network
stack's work and the peer's wake-up per segment (py-spy put the socket writes under
`send_str` at about a fifth of the session's event-loop time, a frame at a time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from order_engine.api.sockets import (
    CLOSE_TIMEOUT_S,
    SlowConsumer,
    abort_connection,
    close_socket,
)
from order_engine.api.ws import send_text

log = logging.getLogger("order_engine.session")

MAX_BURST = 64  # frames sent under one cork
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


@dataclass(frozen=True, slots=True)
class LastWord:
    """How a session ends when the server ends it: a frame (or none), then a close."""

    code: int
    reason: bytes
    frame: str | None = None


class Outbox:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.BaseRequest,
        *,
        send_timeout: float,
        size: int,
    ) -> None:
        self._ws = ws
        self._request = request
        self._send_timeout = send_timeout
        # Unbounded as a queue: `_room` bounds the frames put in it, so the last word always
        # fits, even behind a full outbox.
        self._queue: asyncio.Queue[str | LastWord] = asyncio.Queue()
        self._room = asyncio.Semaphore(size)
        self._socket = _tcp_socket(request)
        self.writer = asyncio.create_task(self._write(), name="session-write")

    async def push(self, frame: str) -> None:
        """Queue a frame; waits while the outbox is full (the client reads slower than
        frames come)."""
        await self._room.acquire()
        self._queue.put_nowait(frame)

    async def close(self, last: LastWord | None) -> None:
        """Send what is queued, then `last` and close; or, with None (the client left),
        stop at once. Returns once the writer has ended."""
        writer = self.writer
        if last is None:
            writer.cancel()
        elif not writer.done():
            self._queue.put_nowait(last)
            try:
                # A client that takes none of what is queued does not hold the server.
                async with asyncio.timeout(2 * self._send_timeout + CLOSE_TIMEOUT_S):
                    await asyncio.wait({writer})
            except TimeoutError:
                abort_connection(self._request)
                writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        error = None if writer.cancelled() else writer.exception()
        if isinstance(error, SlowConsumer):
            log.info("closing a trading session that does not read")
            abort_connection(self._request)
        elif error is not None:
            log.error("trading session writer failed", exc_info=error)
            abort_connection(self._request)

    async def _write(self) -> None:
        """Every frame in the order it was queued, a burst at a time; raises SlowConsumer."""
        while True:
            burst = [await self._queue.get()]
            while len(burst) < MAX_BURST and not self._queue.empty():
                burst.append(self._queue.get_nowait())
            corked = len(burst) > 1 and self._cork(True)
            try:
                for item in burst:
                    if isinstance(item, LastWord):
                        if corked:
                            corked = not self._cork(False)
                        await self._last(item)
                        return
                    try:
                        await self._send(item)
                    except ConnectionError:
                        return  # the client is gone; the session's reader sees it too
                    # Room is made once a frame is written, not when its burst is taken:
                    # the bound holds frames taken but not yet sent too.
                    self._room.release()
            finally:
                if corked:
                    self._cork(False)

    async def _last(self, item: LastWord) -> None:
        if item.frame is not None:
            with contextlib.suppress(ConnectionError, SlowConsumer):
                await self._send(item.frame)
        await close_socket(self._ws, self._request, item.code, item.reason[:120])

    async def _send(self, frame: str) -> None:
        await send_text(self._ws, frame, self._send_timeout, self._request.transport)

    def _cork(self, on: bool) -> bool:
        """Cork (or uncork: what is held leaves now) the connection; False where it cannot
        be (no TCP_CORK, not TCP, the connection gone): frames then leave one by one."""
        sock = self._socket
        if sock is None or _TCP_CORK is None:
            return False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
        except OSError:
            self._socket = None
            return False
        return True


def _tcp_socket(request: web.BaseRequest) -> Any:
    """The connection's TCP socket, or None (a Unix socket, a test transport, gone)."""
    transport = request.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock
