"""Following the chain's account stream: subscribe, apply, and on any break resubscribe
after the last message applied, so the view resumes with no gap (or, if the chain no
longer has that far back, or restarted, from a fresh snapshot)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from order_engine.market.data import MarketData, StreamGap
from order_engine.venues.feed import AccountFeed, FeedBroken, FeedClosed, FeedLagged, FeedMessage

log = logging.getLogger("order_engine.market")


class FeedSubscriptionLike(Protocol):
    async def next(self) -> FeedMessage: ...


class FeedSource(Protocol):
    """Where the stream comes from: the in-process chain, or the chain service."""

    def subscribe(
        self, after_seq: int | None, stream_id: str | None
    ) -> AbstractAsyncContextManager[FeedSubscriptionLike]: ...


class LocalFeedSource:
    """The in-process chain's feed."""

    def __init__(self, feed: AccountFeed) -> None:
        self._feed = feed

    @asynccontextmanager
    async def subscribe(
        self, after_seq: int | None, stream_id: str | None
    ) -> AsyncIterator[FeedSubscriptionLike]:
        with self._feed.subscribe(after_seq=after_seq, stream_id=stream_id) as sub:
            yield sub


async def follow(
    data: MarketData, source: FeedSource, *, retry_s: float = 0.2, max_retry_s: float = 5.0
) -> None:
    """Keep `data` current until cancelled."""
    delay = retry_s
    while True:
        try:
            async with source.subscribe(
                after_seq=data.seq if data.stream_id else None, stream_id=data.stream_id
            ) as sub:
                while True:
                    data.apply(await sub.next())
                    delay = retry_s
        except (FeedLagged, FeedClosed, StreamGap, FeedBroken, OSError) as exc:
            data.disconnected()
            log.warning(
                "market data: stream broken (%s); resubscribing after seq %d", exc, data.seq
            )
        except Exception:
            # A message that could not be applied may have left a pool half updated: the
            # view starts over from a snapshot rather than quote from it.
            log.exception("market data: a message could not be applied; resynchronising")
            data.forget()
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_retry_s)
