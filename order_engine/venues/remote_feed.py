"""The chain service's account stream over its `/feed` WebSocket (`RemoteFeedSource`), as
a Solana node's accountSubscribe would bring it.

Which upcoming tokens are tradable here follows the stream (`note_launches`): a launch on
the service is known to this process once the stream brings the new pool, before anything
applies it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from order_engine.venues.feed import FeedBroken, FeedMessage
from order_engine.venues.feed_wire import decode_message
from order_engine.venues.launches import note_launches
from order_engine.venues.remote_clients import SessionSource, session_of
from order_engine.venues.tokens import REGISTRY, TokenRegistry
from order_engine.venues.wire import WireError

# The stream says the slot every 400 ms even when no pool moves: ten slots of silence
# mean the connection is dead, whatever TCP believes.
FEED_SILENCE_S = 4.0
FEED_CONNECT_TIMEOUT_S = 5.0
# A close is a courtesy: a dead connection must not hold the follower up for long.
FEED_CLOSE_TIMEOUT_S = 1.0
# A snapshot grows with the pools (tens of kB today); far above that, far below abuse.
FEED_MAX_MESSAGE_BYTES = 64 * 2**20


class RemoteFeedSource:
    """The chain service's account stream (its `/feed` WebSocket) as a `FeedSource`.

    Whatever ends a subscription from outside, it ends in `FeedBroken`, for the follower
    to resubscribe after the last message it applied: the connection refused or lost,
    the service closing it (a lagging subscriber, a shutdown), a message that is not ours
    to read, or silence longer than `silence_s`."""

    def __init__(
        self,
        session: SessionSource,
        base_url: str,
        *,
        silence_s: float = FEED_SILENCE_S,
        connect_timeout: float = FEED_CONNECT_TIMEOUT_S,
        registry: TokenRegistry | None = REGISTRY,
    ) -> None:
        """`registry` (None: none) learns from the stream which upcoming tokens the
        service's pools have made tradable."""
        self._session = session
        self.url = base_url.rstrip("/") + "/feed"
        self._silence_s = silence_s
        self._connect_timeout = connect_timeout
        self._registry = registry

    @asynccontextmanager
    async def subscribe(
        self, after_seq: int | None, stream_id: str | None
    ) -> AsyncIterator[RemoteFeedSubscription]:
        params = {}
        if after_seq is not None:
            params["after"] = str(after_seq)
        if stream_id is not None:
            params["stream"] = stream_id
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await session_of(self._session).ws_connect(
                    self.url,
                    params=params,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=FEED_CLOSE_TIMEOUT_S),
                    autoping=True,
                    max_msg_size=FEED_MAX_MESSAGE_BYTES,
                    # orjson reads the frame's bytes: no str made per message.
                    decode_text=False,
                )
        except TimeoutError as exc:
            raise FeedBroken(
                f"the chain service's stream did not open within {self._connect_timeout:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise FeedBroken(f"cannot subscribe to {self.url}: {exc}") from exc
        try:
            yield RemoteFeedSubscription(ws, self._silence_s, self._registry)
        finally:
            await ws.close()


class RemoteFeedSubscription:
    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse[bool],
        silence_s: float,
        registry: TokenRegistry | None = None,
    ) -> None:
        self._ws = ws
        self._silence_s = silence_s
        self._registry = registry

    async def next(self) -> FeedMessage:
        """The next message. Raises FeedBroken once the stream can bring no more."""
        try:
            msg = await self._ws.receive(timeout=self._silence_s)
        except TimeoutError as exc:
            raise FeedBroken(
                f"the chain service's stream was silent for {self._silence_s:g} s"
            ) from exc
        if msg.type is aiohttp.WSMsgType.TEXT or msg.type is aiohttp.WSMsgType.BINARY:
            try:
                message = decode_message(msg.data)
            except WireError as exc:
                raise FeedBroken(f"the chain service sent an unreadable message: {exc}") from exc
            if self._registry is not None:
                # Before anyone applies the message: whoever reacts to a new pool (a
                # sniper's trigger) finds its token tradable.
                note_launches(self._registry, message)
            return message
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise FeedBroken(f"the chain service's stream failed: {msg.data}")
        reason = f": {msg.extra}" if msg.type is aiohttp.WSMsgType.CLOSE and msg.extra else ""
        raise FeedBroken(
            f"the chain service closed the stream (code {self._ws.close_code}{reason})"
        )
