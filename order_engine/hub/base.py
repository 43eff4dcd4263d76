"""Fan-out of committed order events to the WebSocket handlers that watch them."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from order_engine.orders import OrderEvent


class Subscription:
    """One watcher's bounded inbox. A watcher that falls behind is not allowed to grow
    memory: its inbox is dropped and it is told to re-read the store after its last seq.

    A deque and, while the watcher waits, one future: an asyncio.Queue per watcher (with its
    own deques, an Event and a future per get) cost more to make, to fill and to hold, with
    one watcher per order in flight and 10,000 idle ones in a process."""

    __slots__ = ("_inbox", "_maxsize", "_waiter", "lagged", "order_id", "position")

    def __init__(self, order_id: str, maxsize: int) -> None:
        self.order_id = order_id
        # The last seq the watcher has delivered (it says so): audits compare it with the
        # store to find watchers that missed an event nobody will publish again.
        self.position = 0
        self._maxsize = maxsize
        # None in the inbox is the "you lagged" wake-up for a reader blocked in `next`.
        self._inbox: deque[OrderEvent | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.lagged = False

    def push(self, event: OrderEvent) -> None:
        if self.lagged:
            return
        if len(self._inbox) >= self._maxsize:
            self.resync()
            return
        self._put(event)

    def resync(self) -> None:
        """Drop the inbox: events may have been missed (overflow, broker outage)."""
        if self.lagged:
            return
        self.lagged = True
        self._inbox.clear()
        self._put(None)

    def _put(self, item: OrderEvent | None) -> None:
        self._inbox.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> OrderEvent | None:
        """The next event, or None: events were dropped, re-read the store after your seq."""
        while not self._inbox:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._inbox.popleft()
        if event is None:
            self.lagged = False
        return event


class LocalFanout:
    """Order id -> this process's subscriptions. Publishing is O(watchers of that order)."""

    def __init__(self, inbox_size: int = 64, firehose_inbox_size: int = 4096) -> None:
        self._inbox_size = inbox_size
        self._firehose_inbox_size = firehose_inbox_size
        self._subs: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()

    @asynccontextmanager
    async def subscribe(self, order_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription(order_id, self._inbox_size)
        self._subs.setdefault(order_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(order_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[order_id]

    @asynccontextmanager
    async def subscribe_all(self) -> AsyncIterator[Subscription]:
        """Every order's events (the firehose); None from `next` means some were dropped."""
        sub = Subscription("*", self._firehose_inbox_size)
        self._all.add(sub)
        try:
            yield sub
        finally:
            self._all.discard(sub)

    def dispatch(self, event: OrderEvent) -> None:
        for sub in self._subs.get(event.order_id, ()):
            sub.push(event)
        for sub in self._all:
            sub.push(event)

    def wants(self, order_id: str) -> bool:
        """Whether anyone here would receive this order's events."""
        return bool(self._all) or order_id in self._subs

    def watched(self) -> list[str]:
        return list(self._subs)

    def resync_behind(self, stored: dict[str, int]) -> int:
        """Tell every watcher whose position is behind the stored last seq to re-read the
        store; returns how many were told."""
        told = 0
        for order_id, last_seq in stored.items():
            for sub in self._subs.get(order_id, ()):
                if sub.position < last_seq:
                    sub.resync()
                    told += 1
        if told:
            # The firehose cannot re-read one order: it is told that events were missed.
            for sub in self._all:
                sub.resync()
        return told

    def resync_all(self) -> None:
        for subs in (*self._subs.values(), self._all):
            for sub in subs:
                sub.resync()

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._subs.values())


class RecentEvents:
    """Every event of the most recent orders, from seq 1 on, as published here: what a new
    watcher would otherwise read from the store. Only an order whose events all passed here
    in seq order is known (a gap, or a first event that is not seq 1, and it is not), and at
    most `orders` of them (the oldest are forgotten): anything else is the store's to say."""

    def __init__(self, orders: int) -> None:
        self._orders = orders
        self._events: dict[str, list[OrderEvent]] = {}

    def add(self, event: OrderEvent) -> None:
        known = self._events.get(event.order_id)
        if known is None:
            if event.seq == 1:
                self._events[event.order_id] = [event]
                if len(self._events) > self._orders:
                    del self._events[next(iter(self._events))]
            return
        if event.seq == known[-1].seq + 1:
            known.append(event)
        elif event.seq > known[-1].seq:
            del self._events[event.order_id]  # one went missing: not whole any more

    def after(self, order_id: str, after: int) -> list[OrderEvent] | None:
        """The order's events after seq `after`; None when they are not all known here, or
        there are none yet (whether more will come is the store's to say)."""
        known = self._events.get(order_id)
        if known is None or after >= len(known):
            return None
        return known[after:]


class Hub(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, order_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe BEFORE reading the store: then nothing committed after the read is
        missed, and anything seen twice is dropped by seq."""
        ...

    def subscribe_all(self) -> AbstractAsyncContextManager[Subscription]:
        """Every order's events, as they are published (the firehose)."""
        ...

    async def ping(self) -> None:
        """Raise if the broker (if any) cannot be reached: readiness."""
        ...

    def recent(self, order_id: str, after: int) -> list[OrderEvent] | None:
        """The order's events after seq `after` when this hub knows them all and there is at
        least one, or None (read the store). A hub that answers is the only way events are
        published, so an event is either in its answer or published after it (call after
        subscribing, as for the store)."""
        ...

    async def publish(self, event: OrderEvent) -> None:
        """Called after the event is committed, on the engine's path. Never raises and never
        waits on a broker: a slow or absent one must not stop or slow the engine; watchers
        catch up from the store."""
        ...
