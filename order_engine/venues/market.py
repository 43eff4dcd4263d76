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

The market keeps its state in the chain's state file (`chain_state`) when given one: every
pool's whole state, the market's clock, fair prices and launched tokens are committed with
the chain's batches (a landing's pools with that landing) and at least once a slot while
they change, and a market built on that file starts where the last one stopped.

Two controls move it on command (`controls`; HTTP in `api/sim.py` and the chain service's
`/admin`): `move_price`, news that reprices a token at once, and `launch`, an upcoming
token's first pool. A profile may also launch the upcoming tokens on a schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from order_engine.venues import arbitrage, launches, market_state
from order_engine.venues.chain import SLOT_SECONDS, SimulatedChain
from order_engine.venues.chain_state import ChainState, PoolRow
from order_engine.venues.controls import ControlError, Launch, LocalControls, PriceMove
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import DlmmPool, bin_id_for_price
from order_engine.venues.fair_prices import FairPrices
from order_engine.venues.feed import AccountFeed
from order_engine.venues.market_data import POOLS, PoolSpec
from order_engine.venues.pool import DustAmount, Pool, PoolExhausted
from order_engine.venues.profiles import Profile
from order_engine.venues.tokens import REGISTRY, TokenRegistry, TokenState, UnknownToken
from order_engine.venues.venue import SimulatedVenue

log = logging.getLogger("order_engine.venues")

VENUE_NAMES = ("Raydium", "Meteora")
# What the arbitrageurs' probing swaps are worth: enough that rounding is far below a bps.
PROBE_USD = 1.0
# The largest move `move_price` makes at once: half or one and a half times the price.
# Concentrated pools follow only as far as their bins reach (±15 % for SOL/USDC).
MAX_MOVE_BPS = 5_000.0
# Tries at taking a pool to a moved price: each leaves a fraction of the last one's gap.
FOLLOW_ROUNDS = 4


class SimulatedMarket:
    def __init__(
        self,
        profile: Profile,
        seed: int = 0,
        pools: Iterable[PoolSpec] = POOLS,
        *,
        registry: TokenRegistry = REGISTRY,
        state: ChainState | None = None,
    ) -> None:
        """`registry` describes this market's chain: which upcoming tokens its pools make
        tradable (none, when it starts). One market per registry, then: the process's
        engine resolves tokens against the same one. `state`: the chain's state file (by
        default a memory one, forgotten with the market), opened and restored by `start`."""
        self.profile = profile
        self.registry = registry
        self._rng = random.Random(seed)
        self._tick_s = profile.drift_interval_ms / 1000 or 1.0
        self._time = 0.0
        self.fair = FairPrices(registry)  # what the arbitrageurs trade the pools toward
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
        pools = tuple(pools)
        registry.sync_pools(token for spec in pools for token in (spec.token_x, spec.token_y))
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
        self.chain = SimulatedChain(
            self.venues, profile, random.Random(self._rng.getrandbits(64)), state
        )
        self.feed = AccountFeed(self.now, self.chain.current_slot)
        self._swapped: dict[str, Pool] = {}  # by the transaction landing now
        self._launched: list[dict[str, Any]] = []  # {symbol, venue, tvl}, in launch order
        self._unsaved: set[str] = set()  # pools changed since last committed
        self._moved = False  # the market's own state too
        self._state = state
        for name, venue in self.venues.items():
            for pool in venue.pools.values():
                self.feed.follow(name, pool)
            venue.on_swap = self._on_swap
        self.chain.on_landed = self._on_landed
        self.chain.state_source = self._unsaved_state
        self._resumed = False
        # Stopped after a start (its file closed): the chain's transactions halted on their way.
        self._halted: list[str] | None = None
        self.controls = LocalControls(self)
        self._task: asyncio.Task[None] | None = None
        self._slots: asyncio.Task[None] | None = None
        self._launcher: asyncio.Task[None] | None = None

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
            self._moved = True
            if not self._publish_moved():
                # Subscribers quote DLMM fees with the clock they last heard.
                self.feed.notice()

    def move_price(self, token_a: str, token_b: str, bps: float) -> PriceMove:
        """News: the fair price of `token_a` in `token_b` moves by `bps` (+100: a is worth
        1 % more), at once. Token a's USD price moves (b and every other token keep theirs),
        informed traders take every pool holding a there (a concentrated pool moves by
        whole bins, and no further than its range), arbitrageurs square what remains, and
        the feed publishes every pool that moved before this returns. So a quote of a in b
        moves by `bps` on a constant-product pool (to its rounding), and on a concentrated
        one within a bin step plus the volatility fee of the bins it crossed (a move of
        less than half a bin leaves it where it was).
        Raises ControlError (a ValueError) naming the field at fault."""
        a = self._pool_token(token_a, "tokenA")
        b = self._pool_token(token_b, "tokenB")
        if a == b:
            raise ControlError("tokenB", "same_token", f"{token_a} and {token_b} trade as {a}")
        if not _number(bps) or not -MAX_MOVE_BPS <= bps <= MAX_MOVE_BPS:
            # NaN fails the comparison too.
            raise ControlError(
                "bps",
                "invalid_bps",
                f"bps must be a number from {-MAX_MOVE_BPS:g} to {MAX_MOVE_BPS:g}",
            )
        before = self.fair.ui_price(a, b)
        factor = 1 + bps / 10_000
        self.fair.shift(a, math.log(factor) * 10_000)
        self._moved = True
        for pools in self._pairs.values():
            for pool in pools:
                if pool.token_x == a:
                    self._take(pool, pool.spot_price() * factor)
                elif pool.token_y == a:
                    self._take(pool, pool.spot_price() / factor)
        self._arbitrage()
        moved = self._publish_moved()
        after = self.fair.ui_price(a, b)
        return PriceMove(a, b, bps, before, after, moved, self.feed.stream_id, self.feed.last_seq)

    def launch(
        self, symbol_or_mint: str, venue: str | None = None, liquidity_usd: float | None = None
    ) -> Launch:
        """An upcoming token's first pool, against wSOL, on `venue` (default Raydium) with
        `liquidity_usd` of value in it (default what a pump.fun curve migrates), opening at
        its bonding curve's last price; the feed publishes it whole and the registry has
        the token tradable before this returns. Raises ControlError naming the field."""
        try:
            token = self.registry.resolve(symbol_or_mint, upcoming=True)
        except UnknownToken:
            listed = ", ".join(t.symbol for t in self.registry.upcoming()) or "none"
            raise ControlError(
                "token",
                "unknown_token",
                f"no upcoming token {symbol_or_mint!r} (upcoming: {listed})",
            ) from None
        if self.registry.state(token) is TokenState.TRADABLE or token.symbol in self.fair:
            raise ControlError(
                "token", "already_launched", f"{token.symbol} is already tradable", status=409
            )
        venue = launches.DEFAULT_VENUE if venue is None else venue
        if venue not in self.venues:
            known = ", ".join(sorted(self.venues))
            raise ControlError("venue", "unknown_venue", f"no venue {venue!r} (known: {known})")
        tvl = launches.DEFAULT_LIQUIDITY_USD if liquidity_usd is None else liquidity_usd
        low, high = launches.MIN_LIQUIDITY_USD, launches.MAX_LIQUIDITY_USD
        if not _number(tvl) or not low <= tvl <= high:
            raise ControlError(
                "liquidityUsd", "invalid_liquidity", f"liquidityUsd must be from {low} to {high}"
            )
        price = launches.launch_usd(token.symbol)
        self.fair.add(token.symbol, price)
        # Listed before the pool is added, whose commit then carries it.
        self._launched.append({"symbol": token.symbol, "venue": venue, "tvl": round(tvl)})
        self._moved = True
        pool = self.add_pool(launches.launch_spec(token.symbol, venue, round(tvl)))
        # Nothing has run since the pool was published: subscribers in this process read
        # the registry with the token tradable, as the engine's triggers must.
        self.registry.mark_launched(token.symbol)
        return Launch(
            token,
            venue,
            pool.pool_id,
            launches.QUOTE_TOKEN,
            price,
            round(tvl),
            launches.pool_depth(pool, launches.QUOTE_TOKEN),
            self.feed.stream_id,
            self.feed.last_seq,
        )

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
        self._unsaved.add(pool_id)
        if self._state is None or self._resumed:  # a file is open once the market started
            self.chain.flush()  # a new pool is rare and must not be lost: committed at once
        return pool

    async def start(self) -> None:
        if not self._resumed:
            if self._state is not None:  # raises ChainStateUnavailable
                self._state.open()
                market_state.restore(self, self._state.load())
            self._resumed = True
            resumed = self.chain.resume(self.registry)
            if resumed:
                log.info("the chain resumed %d transaction(s) received before it stopped", resumed)
        elif self._halted is not None:  # started again in this process: the chain goes on
            if self._state is not None:
                self._state.open()
            halted, self._halted = self._halted, None
            self.chain.land_soon(halted)
        if self._slots is None:
            self._slots = asyncio.create_task(self._notify_slots(), name="market-slots")
        if self.profile.drift_interval_ms > 0 and self._task is None:
            self._task = asyncio.create_task(self._drift(), name="market-drift")
        if self.profile.launch_interval_s > 0 and self._launcher is None:
            self._launcher = asyncio.create_task(self._launch_listed(), name="market-launches")

    async def stop(self) -> None:
        for task in (self._task, self._slots, self._launcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._slots = self._launcher = None
        if self._resumed and self._halted is None:
            self._halted = self.chain.halt()
            self.chain.flush()  # what moved since the last commit
            if self._state is not None and self._state.durable:
                self._state.close()  # the file and its lock are free for the next process

    async def _drift(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.step()

    async def _launch_listed(self) -> None:
        """The upcoming tokens, one every `launch_interval_s` in the order listed (one
        launched on command meanwhile keeps its turn, which passes)."""
        for token in self.registry.upcoming():
            await asyncio.sleep(self.profile.launch_interval_s)
            try:
                launched = self.launch(token.symbol)
            except ControlError as exc:
                log.info("scheduled launch of %s skipped: %s", token.symbol, exc.message)
                continue
            log.info(
                "launched %s (mint %s) on %s: pool %s",
                launched.token.symbol,
                launched.token.mint,
                launched.venue,
                launched.pool_id,
            )

    async def _notify_slots(self) -> None:
        # A quiet stream and a dead one look alike without a heartbeat.
        while True:
            await asyncio.sleep(SLOT_SECONDS)
            self.feed.notice()
            if self._unsaved or self._moved:
                self.chain.checkpoint()

    def _on_swap(self, pool: Pool) -> None:
        self._swapped[pool.pool_id] = pool
        self._unsaved.add(pool.pool_id)

    # -- durability (market_state) -----------------------------------------------------

    def _unsaved_state(self) -> tuple[list[PoolRow], dict[str, Any]]:
        return market_state.take_unsaved(self)

    def _take(self, pool: Pool, price: float) -> None:
        """Trade `pool` to `price` (y per x, base units). A first try falls short (a
        concentrated pool's by the volatility fee of the bins it crosses, which its input
        did not allow for; a constant-product pool's by rounding): the next ones close
        the gap, as far as the pool's bins allow."""
        for _ in range(FOLLOW_ROUNDS):
            before = pool.spot_price()
            pool.trade_towards(price, self._time)
            if pool.spot_price() == before:
                return

    def _publish_moved(self) -> tuple[str, ...]:
        """Publish every pool that changed since it was last published; their ids."""
        moved = []
        for venue in self.venues.values():
            for pool in venue.pools.values():
                if self.feed.publish(pool) is not None:
                    moved.append(pool.pool_id)
        self._unsaved.update(moved)
        return tuple(moved)

    def _pool_token(self, symbol_or_mint: str, field: str) -> str:
        """The symbol pools hold the token as, if the market prices it (SOL: WSOL)."""
        try:
            token = self.registry.resolve(symbol_or_mint)
        except UnknownToken:
            raise ControlError(
                field, "unknown_token", f"{symbol_or_mint!r} is not a tradable token"
            ) from None
        symbol = TokenRegistry.pool_token(token).symbol
        if symbol not in self.fair:
            raise ControlError(field, "unknown_token", f"no pool holds {symbol}")
        return symbol

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
        return int(usd / self.fair.usd(token) * self.registry.resolve(token, upcoming=True).scale)

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
            reserve_x = self.fair.reference_base(spec.token_x, half_usd)
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
            y_per_bin=self.fair.reference_base(spec.token_y, Decimal(spec.tvl_usd) / bins),
        )


def _number(value: object) -> bool:
    # bool is an int to Python, never a number to a caller.
    return isinstance(value, int | float) and not isinstance(value, bool)
