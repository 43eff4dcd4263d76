"""A trading session's frames out: one writer, a bounded outbox, and the send timeout every
WebSocket has. A session that stops reading is cut off as any slow consumer is: a frame not
taken within the send timeout drops the connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiohttp import web

from order_engine.api.sockets import (
    CLOSE_TIMEOUT_S,
    SlowConsumer,
    abort_connection,
    close_socket,
)

log = logging.getLogger("order_engine.session")


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
        """Every frame in the order it was queued; raises SlowConsumer."""
        while True:
            item = await self._queue.get()
            if isinstance(item, LastWord):
                if item.frame is not None:
                    with contextlib.suppress(ConnectionError, SlowConsumer):
                        await self._send(item.frame)
                await close_socket(self._ws, self._request, item.code, item.reason[:120])
                return
            self._room.release()
            try:
                await self._send(item)
            except ConnectionError:
                return  # the client is gone; the session's reader sees it too

    async def _send(self, frame: str) -> None:
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._ws.send_str(frame)
        except TimeoutError:
            raise SlowConsumer from None
