"""The chain's account stream: every pool change as a slot-stamped update, as a Solana RPC
node's accountSubscribe sends them.

A subscriber gets a snapshot of every pool first, then every message in order. Seq numbers
run 1, 2, 3… with no gap over updates and slot notices; a snapshot carries the seq it is
current at, so "the snapshot, then each message after its seq" rebuilds the chain's pools
exactly. A subscriber that resumes the same stream after a seq the feed still holds gets
the messages after it instead, with no snapshot; a restarted chain is a new stream.

Publishing is cheap, as it runs on every swap: a message goes into a ring buffer once and
waiting readers are woken; nothing is encoded. A reader keeps only its place in that
buffer, so a slow one costs no memory: once it is more than its inbox behind it is told so
(`FeedLagged`) and resubscribes after the last message it took.

Messages are shared by every subscriber: read them, never change them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from order_engine.venues.pool import Pool

DEFAULT_HISTORY = 10_000
DEFAULT_INBOX = 10_000


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    venue: str
    pool_id: str
    state: dict[str, Any]  # the pool's whole state: `pool_from_state` builds it


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    seq: int  # the last seq this snapshot includes: apply the messages after it
    slot: int
    market_time: float
    pools: tuple[PoolSnapshot, ...]


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    stream_id: str
    seq: int
    slot: int
    market_time: float
    venue: str
    pool_id: str
    state: dict[str, Any]  # whole state for a new pool, else what changed: `apply_state` it


@dataclass(frozen=True, slots=True)
class SlotNotice:
    """The stream is alive and the market's clock reads `market_time`."""

    stream_id: str
    seq: int
    slot: int
    market_time: float


FeedMessage = Snapshot | AccountUpdate | SlotNotice
Sequenced = AccountUpdate | SlotNotice


class FeedLagged(Exception):
    """The subscriber fell more than its inbox behind: resubscribe after `last_seq`."""

    def __init__(self, stream_id: str, last_seq: int) -> None:
        super().__init__(f"fell behind on stream {stream_id} after seq {last_seq}")
        self.stream_id = stream_id
        self.last_seq = last_seq


class FeedClosed(Exception):
    """The subscription was closed."""


class FeedBroken(Exception):
    """The connection carrying the stream broke (a remote feed): resubscribe after the last
    message applied."""


class FeedSubscription:
    def __init__(
        self, feed: AccountFeed, first: Snapshot | None, after_seq: int, inbox: int
    ) -> None:
        self._feed = feed
        self._first = first
        self._next_seq = after_seq + 1
        self._inbox = inbox
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    async def next(self) -> FeedMessage:
        """The next message, waiting for one if need be. Raises FeedLagged, FeedClosed."""
        while True:
            if self._closed:
                raise FeedClosed
            if self._first is not None:
                first, self._first = self._first, None
                return first
            message = self._feed._message(self._next_seq, self._inbox)
            if message is not None:
                self._next_seq += 1
                return message
            self._waiter = self._feed._waiter()
            try:
                await self._waiter
            finally:
                self._feed._forget(self._waiter)
                self._waiter = None

    def close(self) -> None:
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __enter__(self) -> FeedSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AccountFeed:
    def __init__(
        self,
        clock: Callable[[], float],
        slot: Callable[[], int],
        history: int = DEFAULT_HISTORY,
    ) -> None:
        """`clock` reads the market's time (DLMM fees decay with it), `slot` the chain's;
        the feed keeps the last `history` messages for subscribers that resume."""
        if history <= 0:
            raise ValueError("history must be positive")
        self.stream_id = uuid.uuid4().hex
        self.last_seq = 0
        self._clock = clock
        self._slot = slot
        self._ring: list[Sequenced | None] = [None] * history
        self._pools: dict[str, tuple[str, Pool]] = {}
        self._waiters: set[asyncio.Future[None]] = set()

    # -- what the chain and the market publish -----------------------------------------

    def follow(self, venue: str, pool: Pool) -> None:
        """Include a pool that exists from the start: it is in every snapshot, and no
        update announces it."""
        if pool.pool_id in self._pools:
            raise ValueError(f"{pool.pool_id} is already in the feed")
        self._pools[pool.pool_id] = (venue, pool)
        pool.take_changes()  # its state so far is in the snapshots

    def add_pool(self, venue: str, pool: Pool) -> AccountUpdate:
        """A pool created now (a launch, a migration): published whole."""
        self.follow(venue, pool)
        return self._publish_update(venue, pool.pool_id, pool.state())

    def publish(self, pool: Pool, slot: int | None = None) -> AccountUpdate | None:
        """What changed in a followed pool since it was last published (stamped with
        `slot`, by default the current one); None if nothing."""
        changes = pool.take_changes()
        if changes is None:
            return None
        venue, _ = self._pools[pool.pool_id]
        return self._publish_update(venue, pool.pool_id, changes, slot)

    def notice(self) -> SlotNotice:
        """Tell subscribers the stream is alive and where the market's clock is."""
        self.last_seq += 1
        notice = SlotNotice(self.stream_id, self.last_seq, self._slot(), self._clock())
        self._append(notice)
        return notice

    # -- what subscribers read ---------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.stream_id,
            self.last_seq,
            self._slot(),
            self._clock(),
            tuple(
                PoolSnapshot(venue, pool_id, pool.state())
                for pool_id, (venue, pool) in self._pools.items()
            ),
        )

    def subscribe(
        self,
        after_seq: int | None = None,
        stream_id: str | None = None,
        inbox: int = DEFAULT_INBOX,
    ) -> FeedSubscription:
        """A snapshot, then every message after it; or, resuming this stream after a seq
        whose successors are all still held (and fit the inbox), those messages directly."""
        if inbox <= 0:
            raise ValueError("inbox must be positive")
        if stream_id == self.stream_id and after_seq is not None:
            behind = self.last_seq - after_seq
            if 0 <= behind <= min(inbox, len(self._ring)):
                return FeedSubscription(self, None, after_seq, inbox)
        snapshot = self.snapshot()
        return FeedSubscription(self, snapshot, snapshot.seq, inbox)

    # -- inside ------------------------------------------------------------------------

    def _publish_update(
        self, venue: str, pool_id: str, state: dict[str, Any], slot: int | None = None
    ) -> AccountUpdate:
        self.last_seq += 1
        update = AccountUpdate(
            self.stream_id,
            self.last_seq,
            self._slot() if slot is None else slot,
            self._clock(),
            venue,
            pool_id,
            state,
        )
        self._append(update)
        return update

    def _append(self, message: Sequenced) -> None:
        self._ring[message.seq % len(self._ring)] = message
        if self._waiters:
            waiters, self._waiters = self._waiters, set()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _message(self, seq: int, inbox: int) -> Sequenced | None:
        """Message `seq` if published; None if not yet. Raises FeedLagged if the reader is
        more than its inbox (or the ring) behind."""
        if seq > self.last_seq:
            return None
        if self.last_seq - seq >= min(inbox, len(self._ring)):
            raise FeedLagged(self.stream_id, seq - 1)
        message = self._ring[seq % len(self._ring)]
        assert message is not None and message.seq == seq
        return message

    def _waiter(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        return waiter

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        self._waiters.discard(waiter)
