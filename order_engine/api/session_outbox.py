"""A trading session's frames out: one writer, a bounded outbox, and the send timeout every
WebSocket has. A session that stops reading is cut off as any slow consumer is: a frame not
taken within the send timeout drops the connection.

Frames come in bursts (one group commit finishes many orders' stages at once). The writer
writes a burst in one write: the frames leave together in as few segments as fit, with one
system call, instead of a segment, a system call and the peer's wake-up each (py-spy put
the socket writes under `send_str` at about a fifth of the session's event-loop time, a
frame at a time; corking them still cost two system calls a burst and one per frame)."""

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
from order_engine.api.ws_send import send_text, write_burst

log = logging.getLogger("order_engine.session")

MAX_BURST = 64  # frames written at once


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
        """Every frame in the order it was queued, a burst at a time; raises SlowConsumer."""
        while True:
            burst = [await self._queue.get()]
            while len(burst) < MAX_BURST and not self._queue.empty():
                burst.append(self._queue.get_nowait())
            frames = [item for item in burst if not isinstance(item, LastWord)]
            try:
                if frames and write_burst(self._ws, self._request.transport, frames):
                    for _ in frames:
                        self._room.release()
                else:
                    for frame in frames:
                        await self._send(frame)
                        # Room is made once a frame is written, not when its burst is
                        # taken: the bound holds frames taken but not yet sent too.
                        self._room.release()
            except ConnectionError:
                return  # the client is gone; the session's reader sees it too
            if len(frames) < len(burst):
                # The last word comes last: nothing is queued after it.
                last = burst[len(frames)]
                assert isinstance(last, LastWord)
                await self._last(last)
                return

    async def _last(self, item: LastWord) -> None:
        if item.frame is not None:
            with contextlib.suppress(ConnectionError, SlowConsumer):
                await self._send(item.frame)
        await close_socket(self._ws, self._request, item.code, item.reason[:120])

    async def _send(self, frame: str) -> None:
        await send_text(self._ws, frame, self._send_timeout, self._request.transport)
