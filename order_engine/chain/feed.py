"""`GET /feed`: the chain's account stream over a WebSocket, in the JSON of
`order_engine.venues.feed_wire`, which replicas follow to quote locally."""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import WSCloseCode, WSMsgType, web

from order_engine.chain.shared import MARKET, Refusal
from order_engine.venues.feed import (
    FeedClosed,
    FeedLagged,
    FeedMessage,
    FeedSubscription,
    Sequenced,
    Snapshot,
)
from order_engine.venues.feed_wire import CLOSE_LAGGED, encode_message
from order_engine.venues.wire import BAD_REQUEST, WireError, parse_amount

log = logging.getLogger("order_engine.chain")

# A subscriber that has not taken a frame within this long is not reading: dropped, so it
# cannot hold the chain's memory (aiohttp buffers at most its writer limit before waiting).
FEED_SEND_TIMEOUT_S = 5.0
# Pings find a subscriber whose host vanished without a word, which no send would notice
# before the kernel's buffers filled; the replicas answer them as they read.
FEED_HEARTBEAT_S = 15.0
FEED_CLOSE_TIMEOUT_S = 1.0
# Subscribers send nothing but control frames.
FEED_MAX_INCOMING_BYTES = 4096
# The frames of the latest messages, kept for the subscribers sending them.
FEED_FRAME_CACHE = 4096
_STREAM_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class FeedFrames:
    """Each message of the feed encoded once, however many subscribers send it: they all
    read the same few latest messages, so a small ring of recent frames serves them."""

    def __init__(self, size: int = FEED_FRAME_CACHE) -> None:
        self._ring: list[tuple[Sequenced, bytes] | None] = [None] * size
        self.encoded = 0  # messages encoded, for tests of the sharing

    def frame(self, message: FeedMessage) -> bytes:
        if isinstance(message, Snapshot):  # one per subscription, never shared
            self.encoded += 1
            return encode_message(message)
        i = message.seq % len(self._ring)
        held = self._ring[i]
        # By identity: a seq is a message of the one feed this service runs, but identity
        # costs nothing and cannot be fooled.
        if held is not None and held[0] is message:
            return held[1]
        frame = encode_message(message)
        self.encoded += 1
        self._ring[i] = (message, frame)
        return frame


class FeedSockets:
    """The open feed WebSockets (closed with 1001 on shutdown) and their shared frames."""

    def __init__(self) -> None:
        self.frames = FeedFrames()
        self.open: dict[web.WebSocketResponse, web.BaseRequest] = {}

    async def close_all(self) -> None:
        await asyncio.gather(
            *(
                _close_feed(ws, request, WSCloseCode.GOING_AWAY, b"chain service shutting down")
                for ws, request in list(self.open.items())
            ),
            return_exceptions=True,
        )


FEEDS = web.AppKey("feeds", FeedSockets)


class _SlowReader(Exception):
    """The subscriber did not take a frame within the send timeout."""


def _feed_query(request: web.Request) -> tuple[int | None, str | None]:
    after_text, stream_id = request.query.get("after"), request.query.get("stream")
    after = None
    if after_text is not None:
        after = parse_amount(after_text, "after")
        if not 0 <= after <= 2**63 - 1:
            raise WireError("after: must be a seq, 0 or more")
    if stream_id is not None and not _STREAM_ID.fullmatch(stream_id):
        raise WireError("stream: not a stream id")
    return after, stream_id


async def feed(request: web.Request) -> web.StreamResponse:
    """GET /feed?after=&stream= upgraded: a snapshot, then every message of the account
    stream in order; or, resuming `stream` after the seq `after` while the chain still
    holds what followed it, those messages directly. One JSON message per text frame. A
    subscriber that falls behind is closed with CLOSE_LAGGED, and resubscribes after the
    last message it applied; one that stops reading is dropped."""
    after, stream_id = _feed_query(request)
    ws = web.WebSocketResponse(
        heartbeat=FEED_HEARTBEAT_S, max_msg_size=FEED_MAX_INCOMING_BYTES, compress=False
    )
    if not ws.can_prepare(request).ok:
        raise Refusal(400, BAD_REQUEST, "/feed speaks WebSocket: send an Upgrade request")
    feeds = request.app[FEEDS]
    # Subscribed before the handshake: the snapshot is no older than the connection.
    with request.app[MARKET].feed.subscribe(after_seq=after, stream_id=stream_id) as sub:
        await ws.prepare(request)
        feeds.open[ws] = request
        reader = asyncio.create_task(_drain(ws), name="feed-read")
        pump = asyncio.create_task(_pump(ws, sub, feeds.frames), name="feed")
        try:
            try:
                await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the handler is cancelled: its peer went away
                for task in (reader, pump):
                    task.cancel()
                await asyncio.gather(reader, pump, return_exceptions=True)
            error = None if pump.cancelled() else pump.exception()
            if isinstance(error, FeedLagged):
                reason = f"lagged after seq {error.last_seq}: resubscribe"
                await _close_feed(ws, request, CLOSE_LAGGED, reason.encode())
            elif isinstance(error, _SlowReader):
                log.info("dropping a feed subscriber that does not read")
                _abort(request)
            elif isinstance(error, FeedClosed):
                await _close_feed(ws, request, WSCloseCode.GOING_AWAY, b"feed closed")
            elif error is not None and not isinstance(error, ConnectionError):
                log.error("feed subscription failed", exc_info=error)
                await _close_feed(ws, request, WSCloseCode.INTERNAL_ERROR, b"internal error")
        finally:
            feeds.open.pop(ws, None)
    return ws


async def _pump(ws: web.WebSocketResponse, sub: FeedSubscription, frames: FeedFrames) -> None:
    while True:
        frame = frames.frame(await sub.next())
        try:
            async with asyncio.timeout(FEED_SEND_TIMEOUT_S):
                await ws.send_frame(frame, WSMsgType.TEXT)
        except TimeoutError:
            raise _SlowReader from None


async def _drain(ws: web.WebSocketResponse) -> None:
    """Reading is what answers pings and takes the subscriber's close; it sends nothing
    else that means anything."""
    async for _ in ws:
        pass


async def _close_feed(
    ws: web.WebSocketResponse, request: web.BaseRequest, code: int, message: bytes
) -> None:
    try:
        async with asyncio.timeout(FEED_CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=message)
    except TimeoutError:
        _abort(request)  # a peer that does not read cannot take the close frame either


def _abort(request: web.BaseRequest) -> None:
    """Drop the connection and what is queued for it: a graceful close would first wait
    for a peer that does not read to take that, which may be never."""
    transport = request.transport
    if transport is not None:  # None: the connection is already gone
        transport.abort()


async def close_feeds(app: web.Application) -> None:
    await app[FEEDS].close_all()
