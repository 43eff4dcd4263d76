"""The whole simulated market: both venues' pools, the chain, and the motion of prices.

The market moves as one, one step per tick:
- every token has one fair USD price (`FairPrices`), a seeded random walk of its own
  volatility, so every pair's fair price agrees with every other's;
- other traders trade every pool at random, a little each tick (noise: it is what sets
  the venues' prices apart, so that either may be the better one);
- arbitrageurs then trade each pool back toward the fair price while that pays net of its
  fee, and buy on one venue to sell on the other while that pays net of both fees
  (`arbitrage`). A pool's price stays within about its fee of fair, the two venues' prices
  of a pair within about the sum of their fees, and no route through a third token beats a
  pair's own pool by more than that pool's fees.
The market runs on its own clock (one tick per step), so the same seed and the same
sequence of trades give the same prices, whatever the wall clock says. A transaction that
lands moves its pools at once; arbitrageurs answer it on the next tick, as back-runs would.

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

from order_engine.venues import arbitrage
from order_engine.venues.chain import SLOT_SECONDS, SimulatedChain
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import DlmmPool, bin_id_for_price
from order_engine.venues.feed import AccountFeed
from order_engine.venues.market_data import (
    DEFAULT_MOTION,
    MOTION,
    POOLS,
    REFERENCE_USD,
    PoolSpec,
    reference_price,
    usd_to_base,
)
from order_engine.venues.pool import DustAmount, Pool, PoolExhausted
from order_engine.venues.profiles import Profile
from order_engine.venues.tokens import REGISTRY
from order_engine.venues.venue import SimulatedVenue

VENUE_NAMES = ("Raydium", "Meteora")
# What the arbitrageurs' probing swaps are worth: enough that rounding is far below a bps.
PROBE_USD = 1.0


class FairPrices:
    """Every token's fair USD price. Its log distance from the reference follows its own
    Ornstein-Uhlenbeck process (`market_data.MOTION`), stepped exactly over any interval."""

    def __init__(self) -> None:
        self._bps: dict[str, float] = {}  # log distance from the reference, in bps
        self._pairs: dict[tuple[str, str], float] = {}  # reference prices, base units

    def usd(self, token: str) -> float:
        return float(REFERENCE_USD[token]) * math.exp(self._bps.get(token, 0.0) / 10_000)

    def price(self, token_x: str, token_y: str) -> float:
        """Fair price of x in y, in base units (what pools store)."""
        reference = self._pairs.get((token_x, token_y))
        if reference is None:
            reference = self._pairs[token_x, token_y] = reference_price(token_x, token_y)
        apart = self._bps.get(token_x, 0.0) - self._bps.get(token_y, 0.0)
        return reference * math.exp(apart / 10_000)

    def advance(self, seconds: float, rng: random.Random) -> None:
        for token in REFERENCE_USD:
            motion = MOTION.get(token, DEFAULT_MOTION)
            # Pull-back rate that keeps the long-run spread at `range_bps`.
            rate = motion.volatility_bps**2 / (2 * motion.range_bps**2)
            keep = math.exp(-rate * seconds)
            shock = motion.range_bps * math.sqrt(1 - keep * keep)
            self._bps[token] = self._bps.get(token, 0.0) * keep + rng.gauss(0, shock)


class SimulatedMarket:
    def __init__(self, profile: Profile, seed: int = 0, pools: Iterable[PoolSpec] = POOLS) -> None:
        self.profile = profile
        self._rng = random.Random(seed)
        self._tick_s = profile.drift_interval_ms / 1000 or 1.0
        self._time = 0.0
        self.fair = FairPrices()  # what the arbitrageurs trade the pools toward
        self._push_bps: dict[str, float] = {}  # other traders' push on each pool
        self._tvl_usd: dict[str, int] = {}
        self._pairs: dict[frozenset[str], list[Pool]] = {}  # every venue's pool of a pair
        # Pools open where the other traders' push would have taken them by now, arbitraged:
        # a constant-product price moves with it but no further than its fee from fair,
        # while the push barely moves a concentrated pool off the fair bin. So the venues'
        # prices differ from the first quote, with no pool traded yet.
        keep = 1 - profile.drift_reversion
        stationary = profile.drift_sigma_bps / math.sqrt(max(1 - keep * keep, 1e-12))
        built: dict[str, list[Pool]] = {name: [] for name in VENUE_NAMES}
        for spec in pools:
            push = self._rng.gauss(0, stationary)
            off_bps = 0.0
            if spec.venue == "Raydium":
                fee_bps = spec.trade_fee_rate / 100
                off_bps = min(max(push, -fee_bps), fee_bps)
            pool = self._build_pool(spec, off_bps)
            self._track(spec, pool, push)
            built.setdefault(spec.venue, []).append(pool)
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
        """One tick each: fair prices move, other traders trade, arbitrageurs answer."""
        keep = 1 - self.profile.drift_reversion
        for _ in range(ticks):
            self._time += self._tick_s
            self.fair.advance(self._tick_s, self._rng)
            for venue in self.venues.values():
                for pool in venue.pools.values():
                    push = self._push_bps[pool.pool_id]
                    moved = push * keep + self._rng.gauss(0, self.profile.drift_sigma_bps)
                    self._trade_noise(pool, moved - push)
            self._arbitrage()
            published = False
            for venue in self.venues.values():
                for pool in venue.pools.values():
                    published = self.feed.publish(pool) is not None or published
            if not published:
                # Subscribers quote DLMM fees with the clock they last heard.
                self.feed.notice()

    def add_pool(self, spec: PoolSpec) -> Pool:
        """Create a pool now (a launch, a migration), at the fair price, and publish it."""
        venue = self.venues.get(spec.venue)
        if venue is None:
            raise ValueError(f"no venue {spec.venue}")
        pool_id = self._pool_id(spec)
        if pool_id in self._push_bps:
            raise ValueError(f"{pool_id} already exists")
        pool = self._build_pool(spec)
        venue.add_pool(pool)  # raises for the same pair the other way round: nothing kept
        self._track(spec, pool)
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

    def _trade_noise(self, pool: Pool, push_bps: float) -> None:
        """Other traders push `pool` by `push_bps`: the flow that would move a constant-
        product pool of its size that far (a concentrated pool of that size moves less)."""
        self._push_bps[pool.pool_id] += push_bps
        # A constant-product price moves by twice the share of a side that is traded.
        usd = abs(push_bps) / 10_000 * self._tvl_usd[pool.pool_id] / 4
        token = pool.token_y if push_bps > 0 else pool.token_x
        amount = self._base_units(token, usd)
        if amount > 0:
            with contextlib.suppress(DustAmount, PoolExhausted):
                pool.swap(token, amount, self._time)

    def _arbitrage(self) -> None:
        now = self._time
        # Buying on one venue to sell on the other needs no hedge, so it lands first; what
        # it leaves beyond a pool's fee from fair goes to the traders who hedge elsewhere.
        for pools in self._pairs.values():
            if len(pools) > 1:
                arbitrage.cross(pools, now, self._probe)
        for pools in self._pairs.values():
            for pool in pools:
                arbitrage.align(pool, self.fair.price(pool.token_x, pool.token_y), now, self._probe)

    def _probe(self, token: str) -> int:
        return max(1, self._base_units(token, PROBE_USD))

    def _base_units(self, token: str, usd: float) -> int:
        return int(usd / self.fair.usd(token) * REGISTRY.resolve(token).scale)

    def _track(self, spec: PoolSpec, pool: Pool, push_bps: float = 0.0) -> None:
        self._push_bps[pool.pool_id] = push_bps
        self._tvl_usd[pool.pool_id] = spec.tvl_usd
        self._pairs.setdefault(frozenset((pool.token_x, pool.token_y)), []).append(pool)

    @staticmethod
    def _pool_id(spec: PoolSpec) -> str:
        return f"{spec.venue.lower()}:{spec.token_x}-{spec.token_y}"

    def _build_pool(self, spec: PoolSpec, off_bps: float = 0.0) -> Pool:
        pool_id = self._pool_id(spec)
        price = self.fair.price(spec.token_x, spec.token_y) * math.exp(off_bps / 10_000)
        half_usd = Decimal(spec.tvl_usd) / 2
        if spec.venue == "Raydium":
            reserve_x = usd_to_base(spec.token_x, half_usd)
            return ConstantProductPool(
                pool_id,
                spec.token_x,
                spec.token_y,
                reserve_x,
                int(reserve_x * price),
                spec.trade_fee_rate,
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
