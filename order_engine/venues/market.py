"""The whole simulated market: both venues' pools, the chain, and the motion of prices.

Each pool's price deviates from the reference table by `d` bps, a seeded mean-reverting
random walk (as if other traders and arbitrageurs traded against it); the two venues' walks
are independent, so their prices differ by a few tens of bps and which venue is better
changes over time. The market runs on its own clock (one tick per step), so the same seed
and the same sequence of trades give the same prices, whatever the wall clock says.

Every change to a pool is published on `feed`, as a chain's account stream would carry it:
each landed transaction's pools, each step's moved pools (or, if none moved, a notice that
the clock did), each new pool whole, and while the market runs a notice every slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Iterable
from decimal import Decimal

from order_engine.venues.chain import SLOT_SECONDS, SimulatedChain
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import DlmmPool, bin_id_for_price
from order_engine.venues.feed import AccountFeed
from order_engine.venues.market_data import POOLS, PoolSpec, reference_price, usd_to_base
from order_engine.venues.pool import Pool
from order_engine.venues.profiles import Profile
from order_engine.venues.venue import SimulatedVenue

VENUE_NAMES = ("Raydium", "Meteora")


class SimulatedMarket:
    def __init__(self, profile: Profile, seed: int = 0, pools: Iterable[PoolSpec] = POOLS) -> None:
        self.profile = profile
        self._rng = random.Random(seed)
        self._tick_s = profile.drift_interval_ms / 1000 or 1.0
        self._time = 0.0
        specs = list(pools)
        # Start from the walk's stationary distribution, so prices differ from the first quote.
        keep = 1 - profile.drift_reversion
        stationary = profile.drift_sigma_bps / math.sqrt(max(1 - keep * keep, 1e-12))
        self._deviation_bps = {self._pool_id(s): self._rng.gauss(0, stationary) for s in specs}
        self._reference = {self._pool_id(s): reference_price(s.token_x, s.token_y) for s in specs}
        built: dict[str, list[Pool]] = {name: [] for name in VENUE_NAMES}
        for spec in specs:
            built.setdefault(spec.venue, []).append(self._build_pool(spec))
        self.venues = {
            name: SimulatedVenue(
                name, pools, profile, random.Random(self._rng.getrandbits(64)), self.now
            )
            for name, pools in built.items()
        }
        self.chain = SimulatedChain(self.venues, profile, random.Random(self._rng.getrandbits(64)))
        self.feed = AccountFeed(self.now, self.chain.current_slot)
        self._swapped: dict[str, Pool] = {}  # by the transaction landing now
        for name, venue in self.venues.items():
            for pool in venue.pools.values():
                self.feed.follow(name, pool)
            venue.on_swap = self._on_swap
        self.chain.on_landed = self._on_landed
        self._task: asyncio.Task[None] | None = None
        self._slots: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Market time in seconds: advances one tick per `step`."""
        return self._time

    def step(self, ticks: int = 1) -> None:
        """Move every pool's price one random-walk step (per tick) toward its new target."""
        keep = 1 - self.profile.drift_reversion
        for _ in range(ticks):
            self._time += self._tick_s
            moved = False
            for venue in self.venues.values():
                for pool in venue.pools.values():
                    d = self._deviation_bps[pool.pool_id] * keep
                    d += self._rng.gauss(0, self.profile.drift_sigma_bps)
                    self._deviation_bps[pool.pool_id] = d
                    pool.trade_towards(self._target(pool.pool_id), self._time)
                    moved = self.feed.publish(pool) is not None or moved
            if not moved:
                # Subscribers quote DLMM fees with the clock they last heard.
                self.feed.notice()

    def add_pool(self, spec: PoolSpec) -> Pool:
        """Create a pool now (a launch, a migration), at the reference price, and publish it."""
        venue = self.venues.get(spec.venue)
        if venue is None:
            raise ValueError(f"no venue {spec.venue}")
        pool_id = self._pool_id(spec)
        if pool_id in self._reference:
            raise ValueError(f"{pool_id} already exists")
        self._deviation_bps[pool_id] = 0.0
        self._reference[pool_id] = reference_price(spec.token_x, spec.token_y)
        pool = self._build_pool(spec)
        try:
            venue.add_pool(pool)
        except ValueError:  # the same pair, the other way round
            del self._deviation_bps[pool_id], self._reference[pool_id]
            raise
        self.feed.add_pool(spec.venue, pool)
        return pool

    async def start(self) -> None:
        if self._slots is None:
            self._slots = asyncio.create_task(self._notify_slots(), name="market-slots")
        if self.profile.drift_interval_ms > 0 and self._task is None:
            self._task = asyncio.create_task(self._drift(), name="market-drift")

    async def stop(self) -> None:
        for task in (self._task, self._slots):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._slots = None

    async def _drift(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.step()

    async def _notify_slots(self) -> None:
        # A quiet stream and a dead one look alike without a heartbeat.
        while True:
            await asyncio.sleep(SLOT_SECONDS)
            self.feed.notice()

    def _on_swap(self, pool: Pool) -> None:
        self._swapped[pool.pool_id] = pool

    def _on_landed(self, slot: int) -> None:
        for pool in self._swapped.values():
            self.feed.publish(pool, slot)
        self._swapped.clear()

    def _target(self, pool_id: str) -> float:
        return self._reference[pool_id] * math.exp(self._deviation_bps[pool_id] / 10_000)

    @staticmethod
    def _pool_id(spec: PoolSpec) -> str:
        return f"{spec.venue.lower()}:{spec.token_x}-{spec.token_y}"

    def _build_pool(self, spec: PoolSpec) -> Pool:
        pool_id = self._pool_id(spec)
        price = self._target(pool_id)
        half_usd = Decimal(spec.tvl_usd) / 2
        if spec.venue == "Raydium":
            reserve_x = usd_to_base(spec.token_x, half_usd)
            return ConstantProductPool(
                pool_id, spec.token_x, spec.token_y, reserve_x, int(reserve_x * price)
            )
        bins = 2 * spec.bins_each_side + 1
        return DlmmPool(
            pool_id,
            spec.token_x,
            spec.token_y,
            bin_step=spec.bin_step,
            base_factor=spec.base_factor,
            active_id=bin_id_for_price(price, spec.bin_step),
            bins_each_side=spec.bins_each_side,
            y_per_bin=usd_to_base(spec.token_y, Decimal(spec.tvl_usd) / bins),
        )
