"""The whole simulated market: both venues' pools, the chain, and the motion of prices.

Each pool's price deviates from the reference table by `d` bps, a seeded mean-reverting
random walk (as if other traders and arbitrageurs traded against it); the two venues' walks
are independent, so their prices differ by a few tens of bps and which venue is better
changes over time. The market runs on its own clock (one tick per step), so the same seed
and the same sequence of trades give the same prices, whatever the wall clock says.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Iterable
from decimal import Decimal

from order_engine.venues.chain import SimulatedChain
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import DlmmPool, bin_id_for_price
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
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Market time in seconds: advances one tick per `step`."""
        return self._time

    def step(self, ticks: int = 1) -> None:
        """Move every pool's price one random-walk step (per tick) toward its new target."""
        keep = 1 - self.profile.drift_reversion
        for _ in range(ticks):
            self._time += self._tick_s
            for venue in self.venues.values():
                for pool in venue.pools.values():
                    d = self._deviation_bps[pool.pool_id] * keep
                    d += self._rng.gauss(0, self.profile.drift_sigma_bps)
                    self._deviation_bps[pool.pool_id] = d
                    pool.trade_towards(self._target(pool.pool_id), self._time)

    async def start(self) -> None:
        if self.profile.drift_interval_ms > 0 and self._task is None:
            self._task = asyncio.create_task(self._drift(), name="market-drift")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _drift(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.step()

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
