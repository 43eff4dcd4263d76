"""The latest state of every pool, as the chain's account stream tells it.

Serious Solana routers keep every pool in memory, fed by account subscriptions, and quote
locally in microseconds instead of asking a venue per order. `MarketData` does that: it
rebuilds each pool from a snapshot, applies the stream's updates in seq order (a gap is
refused, never papered over), and quotes with the very pool and route code the chain
itself runs (`SimulatedVenue` over mirrored pools), so a streamed quote equals the venue's
own at the same slot.

A view is only as good as its freshness: the stream says the slot once per slot even when
no pool moves, so silence means the stream is down or behind, and the view stops serving
quotes (`fresh`) once it is more than `max_staleness_slots` behind.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping

from order_engine.venues.chain import SLOT_SECONDS
from order_engine.venues.feed import AccountUpdate, FeedMessage, Snapshot
from order_engine.venues.pool import Pool, pool_from_state
from order_engine.venues.profiles import PROFILES
from order_engine.venues.venue import SimulatedVenue

log = logging.getLogger("order_engine.market")

Listener = Callable[[AccountUpdate], None]


class StreamGap(Exception):
    """A message that does not follow the last one applied: resubscribe after `seq`."""


class MarketData:
    def __init__(
        self, *, max_staleness_slots: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_staleness_slots = max_staleness_slots
        self._clock = clock
        self.stream_id: str | None = None
        self.seq = 0  # the last message applied
        self.slot = 0  # the last slot the stream told
        self.market_time = 0.0  # the market's clock, which DLMM fees decay by
        self.resyncs = 0  # snapshots taken after the first
        self._snapshots = 0
        self._heard_at = -math.inf  # when (our clock) the stream last said anything
        self._connected = False
        self._pools: dict[str, tuple[str, Pool]] = {}  # pool id -> (venue, mirror)
        self._venues: dict[str, SimulatedVenue] = {}
        self._listeners: list[Listener] = []
        self._reset_listeners: list[Callable[[], None]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # -- following the stream -----------------------------------------------------------

    def apply(self, message: FeedMessage) -> None:
        if isinstance(message, Snapshot):
            self._reset(message)
        else:
            if message.stream_id != self.stream_id or message.seq != self.seq + 1:
                raise StreamGap(
                    f"message {message.stream_id}#{message.seq} does not follow "
                    f"{self.stream_id}#{self.seq}"
                )
            if isinstance(message, AccountUpdate):
                self._update(message)
            self.seq = message.seq
        self.slot = max(self.slot, message.slot)
        self.market_time = message.market_time
        self._heard_at = self._clock()
        self._connected = True
        if self._waiters:
            self._wake()
        # Told once the view is whole and current, so listeners may price against it.
        if isinstance(message, Snapshot):
            for reset in self._reset_listeners:
                reset()
        elif isinstance(message, AccountUpdate):
            for listener in self._listeners:
                listener(message)

    async def reached(self, seq: int) -> None:
        """Until the view has applied the stream up to `seq` (of its current stream)."""
        if self._connected and self.seq >= seq:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, waiter))
        await waiter

    def _wake(self) -> None:
        waiting = []
        for seq, waiter in self._waiters:
            if self.seq >= seq:
                if not waiter.done():
                    waiter.set_result(None)
            elif not waiter.done():
                waiting.append((seq, waiter))
        self._waiters = waiting

    def disconnected(self) -> None:
        """The stream broke: quotes fall back until it is followed again."""
        self._connected = False

    def forget(self) -> None:
        """The view cannot be trusted: quotes fall back, and the next subscription starts
        from a snapshot."""
        self._connected = False
        self.stream_id = None

    def on_update(self, listener: Listener) -> None:
        """Call `listener` after each pool update is applied (triggers, live prices)."""
        self._listeners.append(listener)

    def on_reset(self, listener: Callable[[], None]) -> None:
        """Call `listener` after the view is rebuilt from a snapshot: every pool may have
        moved, unannounced by updates."""
        self._reset_listeners.append(listener)

    def _reset(self, snapshot: Snapshot) -> None:
        self._snapshots += 1
        if self._snapshots > 1:
            self.resyncs += 1
            log.info(
                "market data: resynchronised from a snapshot at seq %d (stream %s)",
                snapshot.seq,
                snapshot.stream_id,
            )
        self.stream_id = snapshot.stream_id
        self.seq = snapshot.seq
        self._pools = {p.pool_id: (p.venue, pool_from_state(p.state)) for p in snapshot.pools}
        self._rebuild_venues()

    def _update(self, update: AccountUpdate) -> None:
        known = self._pools.get(update.pool_id)
        if known is None:  # a new pool (a launch): its whole state
            self._pools[update.pool_id] = (update.venue, pool_from_state(update.state))
            self._rebuild_venues()
        else:
            known[1].apply_state(update.state)

    def _rebuild_venues(self) -> None:
        by_venue: dict[str, list[Pool]] = {}
        for venue, pool in self._pools.values():
            by_venue.setdefault(venue, []).append(pool)
        # The chain's own route search over the mirrors, with no latency and no faults.
        self._venues = {
            name: SimulatedVenue(
                name, pools, PROFILES["instant"], random.Random(0), lambda: self.market_time
            )
            for name, pools in by_venue.items()
        }

    # -- what it knows ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def staleness_slots(self) -> float:
        """How many slots the view may be behind the chain (infinite while disconnected)."""
        if not self._connected:
            return math.inf
        return (self._clock() - self._heard_at) / SLOT_SECONDS

    def fresh(self) -> bool:
        return self.staleness_slots() <= self.max_staleness_slots

    def venues(self) -> list[SimulatedVenue]:
        """Every venue's pools as last streamed."""
        return list(self._venues.values())

    def venue(self, name: str) -> SimulatedVenue | None:
        """The venue's pools as last streamed, to quote against (None: not followed)."""
        return self._venues.get(name)

    @property
    def pools(self) -> Mapping[str, tuple[str, Pool]]:
        return self._pools
