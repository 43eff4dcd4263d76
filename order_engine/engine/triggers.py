"""Armed limit and sniper orders and what fires them: the market crossing their price (a
sniper's: its token trading, deep enough), or the clock their expiry.

Per pair, the orders are kept sorted by limit price (a sniper without one sorts first: any
price will do). A pool update bounds what the pair can
pay per unit (`SimulatedVenue.price_bound`: the pools' marginal prices, before fees and
impact, which only take away), so only orders whose limit lies under that bound can fire:
found by bisection, an update costs O(log n + candidates), never a scan of every order. Each
candidate is then priced exactly, for its whole amount against the streamed pools, and fires
if the best venue pays at least `amount × limitPrice`. A sniper's pair has no route until
its token's first pool appears: that pool's update is the one that prices it, and it fires
there if the pool holds at least its `minLiquidity` of its input token.

The book decides nothing about the store: firing, expiring and cancelling race there, and
the order's next seq lets exactly one of them win. The book only forgets what it handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from bisect import bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from order_engine.market import MarketData
from order_engine.orders import OrderType
from order_engine.payloads import Trigger
from order_engine.venues.base import Quote, VenueError
from order_engine.venues.feed import AccountUpdate
from order_engine.venues.launches import pool_depth
from order_engine.venues.tokens import Token, TokenRegistry
from order_engine.venues.venue import SimulatedVenue

from .run import OrderRun
from .supervision import Supervisor

EXPIRY = "expiry"  # the supervisor's group of the expiry clock
# Float rounding of the bound must never hide an order that the exact check would fire.
_BOUND_SLACK = 1e-9


def _best(
    venues: list[SimulatedVenue], token_in: Token, token_out: Token, amount: int
) -> Quote | None:
    """The best single venue's quote for the whole amount (None: no venue can fill it)."""
    best = None
    for venue in venues:
        with contextlib.suppress(VenueError):
            quote = venue.best_quote(token_in, token_out, amount)
            if best is None or quote.amount_out > best.amount_out:
                best = quote
    return best


def limit_threshold(run: OrderRun) -> int | None:
    """The least output, in base units of token_out, that meets the order's limit price for
    its whole amount (rounded up: never below the limit); None without a limit price."""
    if run.order.limit_price is None:
        return None
    price = Fraction(Decimal(run.order.limit_price))
    out = Fraction(run.order.amount, run.token_in.scale) * price * run.token_out.scale
    return math.ceil(out)


def deep_enough(data: MarketData, run: OrderRun) -> bool:
    """Whether a pool pairing the order's tokens holds at least its `min_liquidity` of its
    input token (true when it asks for none)."""
    least = run.order.min_liquidity
    if least is None:
        return True
    paying = TokenRegistry.pool_token(run.token_in).symbol
    target = TokenRegistry.pool_token(run.token_out).symbol
    return any(
        {pool.token_x, pool.token_y} == {paying, target} and pool_depth(pool, paying) >= least
        for _, pool in data.pools.values()
    )


@dataclass(slots=True)
class _Armed:
    run: OrderRun
    key: tuple[float, str]  # (limit price, order id): the pair's sort order
    threshold: int
    held: bool  # armed again after a failure: it may not fire until its hold-off ends


@dataclass(slots=True)
class _Pair:
    token_in: Token
    token_out: Token
    keys: list[tuple[float, str]] = field(default_factory=list)  # sorted
    armed: dict[str, _Armed] = field(default_factory=dict)

    def routes_through(self, pool_tokens: set[str]) -> bool:
        """Whether a pool holding these tokens can move the pair's price: its routes run
        through pools that hold one of its tokens (directly, or a hop via WSOL or USDC)."""
        ours = {TokenRegistry.pool_token(t).symbol for t in (self.token_in, self.token_out)}
        return bool(ours & pool_tokens)


class TriggerBook:
    def __init__(
        self,
        *,
        market_data: MarketData | None,
        supervisor: Supervisor,
        fire: Callable[[OrderRun, Trigger], None],
        expire: Callable[[OrderRun], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`fire` and `expire` take over an order the book let go of; neither may block."""
        self._data = market_data
        self._supervisor = supervisor
        self._fire = fire
        self._expire = expire
        self._clock = clock
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._where: dict[str, tuple[str, str]] = {}  # order id -> its pair
        self._expiries: list[tuple[float, str]] = []  # heap; stale entries skipped
        self._sooner = asyncio.Event()  # an expiry earlier than the clock waits for
        self._running = False
        self._counts = dict.fromkeys(OrderType, 0)
        if market_data is not None:
            market_data.on_update(self._on_update)
            market_data.on_reset(self.check_all)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._where

    def by_type(self) -> dict[str, int]:
        return {t.value: n for t, n in self._counts.items() if t is not OrderType.MARKET}

    # -- arming -------------------------------------------------------------------------

    def arm(self, run: OrderRun, *, hold_off: float = 0.0) -> None:
        """Wait for the order's trigger; fire at once if the market already meets it, expire
        at once if its time is up. `hold_off` (seconds): an order armed again after a failure
        does not fire before then, so a market that keeps failing it is not hammered."""
        order = run.order
        assert order.expires_at is not None
        if order.expires_at <= self._clock():
            self._expire(run)
            return
        self.disarm(order.order_id)
        pair_key = (run.token_in.symbol, run.token_out.symbol)
        pair = self._pairs.get(pair_key)
        if pair is None:
            pair = self._pairs[pair_key] = _Pair(run.token_in, run.token_out)
        limit = 0.0 if order.limit_price is None else float(Decimal(order.limit_price))
        armed = _Armed(run, (limit, order.order_id), limit_threshold(run) or 0, hold_off > 0)
        insort(pair.keys, armed.key)
        pair.armed[order.order_id] = armed
        self._where[order.order_id] = pair_key
        self._counts[order.order_type] += 1
        if hold_off > 0:
            asyncio.get_running_loop().call_later(hold_off, self._held_off, armed)
        if not self._expiries or order.expires_at < self._expiries[0][0]:
            self._sooner.set()
        heapq.heappush(self._expiries, (order.expires_at, order.order_id))
        self._check(pair_key, pair)

    def disarm(self, order_id: str) -> OrderRun | None:
        """Forget the order (cancelled, finished, fired); the run it was armed with."""
        pair_key = self._where.pop(order_id, None)
        if pair_key is None:
            return None
        pair = self._pairs[pair_key]
        armed = pair.armed.pop(order_id)
        del pair.keys[bisect_right(pair.keys, armed.key) - 1]
        self._counts[armed.run.order.order_type] -= 1
        if not pair.armed:
            del self._pairs[pair_key]
        return armed.run

    # -- the market ---------------------------------------------------------------------

    def _on_update(self, update: AccountUpdate) -> None:
        if not self._pairs or self._data is None:
            return
        known = self._data.pools.get(update.pool_id)
        if known is None:
            return
        pool = known[1]
        moved = {pool.token_x, pool.token_y}
        for pair_key, pair in list(self._pairs.items()):
            if pair.routes_through(moved):
                self._check(pair_key, pair)

    def _held_off(self, armed: _Armed) -> None:
        """The hold-off is over: the order may fire, on the market as it is now."""
        order_id = armed.run.order_id
        pair_key = self._where.get(order_id)
        if pair_key is None or self._pairs[pair_key].armed.get(order_id) is not armed:
            return  # fired, cancelled or armed anew since
        armed.held = False
        self._check(pair_key, self._pairs[pair_key])

    def check_all(self) -> None:
        """Price every pair again (the view was rebuilt from a snapshot)."""
        for pair_key, pair in list(self._pairs.items()):
            self._check(pair_key, pair)

    def _check(self, pair_key: tuple[str, str], pair: _Pair) -> None:
        data = self._data
        if data is None or not data.fresh() or not pair.keys:
            return  # no trustworthy prices: nothing fires on a stale view
        token_in, token_out = pair.token_in, pair.token_out
        venues = data.venues()
        bounds = [b for v in venues if (b := v.price_bound(token_in, token_out)) is not None]
        if not bounds:
            return
        # The bound in UI units (token_out per token_in), as limit prices are written.
        ui_bound = max(bounds) * token_in.scale / token_out.scale * (1 + _BOUND_SLACK)
        end = bisect_right(pair.keys, (ui_bound, "\uffff"))
        # Orders of the same size (bots like round amounts) share one pricing per update.
        priced: dict[int, Quote | None] = {}
        for _, order_id in pair.keys[:end]:
            armed = pair.armed[order_id]
            if armed.held:
                continue
            amount = armed.run.order.amount
            if amount not in priced:
                priced[amount] = _best(venues, token_in, token_out, amount)
            best = priced[amount]
            if (
                best is not None
                and best.amount_out >= armed.threshold
                and deep_enough(data, armed.run)
            ):
                run = self.disarm(order_id)
                assert run is not None
                self._fire(run, Trigger(slot=data.slot, price=best.price))

    # -- the clock ----------------------------------------------------------------------

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._supervisor.spawn(EXPIRY, self._expiry_clock(), "expiry")

    async def _expiry_clock(self) -> None:
        while True:
            self._sooner.clear()
            delay = None
            while self._expiries:
                at, order_id = self._expiries[0]
                if order_id not in self._where:
                    heapq.heappop(self._expiries)  # fired or cancelled since
                    continue
                delay = at - self._clock()
                if delay > 0:
                    break
                heapq.heappop(self._expiries)
                run = self.disarm(order_id)
                assert run is not None
                self._expire(run)
                delay = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._sooner.wait()
