"""Moving a price on command: the fair price moves by exactly the asked bps, every pool holding
the token follows at once (a constant-product pool's quotes by the bps, a concentrated pool
by whole bins, within its range), and the feed publishes each moved pool before the call
returns, so a follower's quotes equal the market's."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from order_engine.market import MarketData
from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.base import INSUFFICIENT_LIQUIDITY, PermanentVenueError
from order_engine.venues.controls import ControlError
from order_engine.venues.dlmm import DlmmPool, bin_id_for_price
from order_engine.venues.feed import AccountUpdate, FeedSubscription
from order_engine.venues.launches import pool_depth
from order_engine.venues.market import MAX_MOVE_BPS
from order_engine.venues.market_data import usd_to_base
from order_engine.venues.tokens import ALL_TOKENS, UPCOMING_TOKENS, Token, TokenRegistry

WAIT = 10.0  # seconds: a bound on waiting for what must come, never a pause
# (token a, token b): direct pools, two hops (RAY/JUP, BONK/USDT), a stablecoin, a pool's y.
PAIRS = [
    ("SOL", "USDC"),
    ("USDC", "SOL"),
    ("BONK", "WSOL"),
    ("RAY", "JUP"),
    ("USDT", "USDC"),
    ("BONK", "USDT"),
]


def fresh_market(seed: int = 3) -> SimulatedMarket:
    registry = TokenRegistry(ALL_TOKENS, upcoming=UPCOMING_TOKENS)
    return SimulatedMarket(PROFILES["instant"], seed=seed, registry=registry)


def tokens(market: SimulatedMarket, a: str, b: str) -> tuple[Token, Token]:
    return market.registry.resolve(a), market.registry.resolve(b)


def hundred_dollars(market: SimulatedMarket, token: Token) -> int:
    return usd_to_base(market.registry.pool_token(token).symbol, Decimal(100))


async def until_seq(sub: FeedSubscription, seq: int) -> list[AccountUpdate]:
    """The updates the feed publishes up to `seq`."""
    updates = []
    async with asyncio.timeout(WAIT):
        while True:
            message = await sub.next()
            if isinstance(message, AccountUpdate):
                updates.append(message)
            if message.seq >= seq:
                return updates


@given(pair=st.sampled_from(PAIRS), bps=st.floats(-1000, 1000))
@example(pair=("SOL", "USDC"), bps=100.0)
@example(pair=("SOL", "USDC"), bps=-1000.0)
@example(pair=("USDT", "USDC"), bps=3.0)
@settings(max_examples=40, deadline=None)
def test_quotes_move_by_the_bps(pair: tuple[str, str], bps: float) -> None:
    market = fresh_market()
    a, b = tokens(market, *pair)
    amount = hundred_dollars(market, a)
    raydium = market.venues["Raydium"]
    before = raydium.best_quote(a, b, amount).amount_out
    meteora = [p for p in market.venues["Meteora"].pools.values() if isinstance(p, DlmmPool)]
    bins = {p.pool_id: p.active_id for p in meteora}
    factor = 1 + bps / 10_000
    moved_token = market.registry.pool_token(a).symbol
    # Where each concentrated pool holding a should go: the bin of the moved price.
    targets = {
        p.pool_id: bin_id_for_price(
            p.spot_price() * (factor if p.token_x == moved_token else 1 / factor), p.bin_step
        )
        for p in meteora
        if moved_token in (p.token_x, p.token_y)
    }
    # Past a pool's range it stops at the edge, and arbitrageurs then pull the other
    # venue's pool of that pair back within both fees of it: the next test's case.
    assume(
        all(
            p.min_id < targets[p.pool_id] < p.max_id
            for p in meteora
            if p.pool_id in targets and {p.token_x, p.token_y} == {a.symbol, b.symbol}
        )
    )

    move = market.move_price(pair[0], pair[1], bps)

    assert move.price_after / move.price_before == pytest.approx(factor, rel=1e-9)
    # A constant-product route: the bps, within one (rounding, the price impact of $100 in
    # pools whose reserves moved, what arbitrageurs then squared between the venues).
    after = raydium.best_quote(a, b, amount).amount_out
    assert abs(after / before / factor - 1) < 1 / 10_000
    # Concentrated pools holding a: to the bin of the moved price (a bin short, when the
    # swap that got there emptied it), one bin inside the edge of their range at most.
    for pool in meteora:
        if pool.pool_id not in targets:
            assert pool.active_id == bins[pool.pool_id]
            continue
        edge = min(max(targets[pool.pool_id], pool.min_id + 1), pool.max_id - 1)
        assert abs(pool.active_id - edge) <= 1, (pool.pool_id, pool.active_id, edge)


async def test_the_feed_publishes_every_moved_pool_before_the_move_returns() -> None:
    market = fresh_market()
    data = MarketData(max_staleness_slots=10)
    sol, usdc = tokens(market, "SOL", "USDC")
    with market.feed.subscribe() as sub:
        data.apply(await sub.next())  # the snapshot
        move = market.move_price("SOL", "USDC", 250)
        assert market.feed.last_seq == move.seq  # all of it published already
        updates = await until_seq(sub, move.seq)
    for update in updates:
        data.apply(update)
    holding_sol = {
        pool.pool_id
        for venue in market.venues.values()
        for pool in venue.pools.values()
        if "WSOL" in (pool.token_x, pool.token_y)
    }
    assert {u.pool_id for u in updates} == set(move.pools) == holding_sol
    assert (move.token_a, move.token_b, move.stream_id) == ("WSOL", "USDC", market.feed.stream_id)
    # The follower's view quotes exactly as the market now does.
    for name, venue in market.venues.items():
        mirror = data.venue(name)
        assert mirror is not None
        for token_in, token_out in ((sol, usdc), (usdc, sol)):
            amount = hundred_dollars(market, token_in)
            theirs = venue.best_quote(token_in, token_out, amount)
            assert mirror.best_quote(token_in, token_out, amount).amount_out == theirs.amount_out


def test_moves_add_up_and_keep_the_other_tokens_where_they_were() -> None:
    market = fresh_market()
    usd = {token: market.fair.usd(token) for token in ("WSOL", "USDC", "BONK", "JUP")}
    market.move_price("BONK", "USDC", 500)
    market.move_price("BONK", "JUP", -500)
    assert market.fair.usd("BONK") == pytest.approx(usd["BONK"] * 1.05 * 0.95, rel=1e-12)
    for token in ("WSOL", "USDC", "JUP"):
        assert market.fair.usd(token) == usd[token]


def test_the_largest_move_leaves_a_concentrated_pool_past_its_range() -> None:
    market = fresh_market()
    sol, usdc = tokens(market, "SOL", "USDC")
    move = market.move_price("SOL", "USDC", -MAX_MOVE_BPS)
    assert move.price_after == pytest.approx(move.price_before / 2, rel=1e-9)
    raydium = market.venues["Raydium"]
    before = raydium.best_quote(sol, usdc, 10**9)
    assert before.price == pytest.approx(move.price_after, rel=0.005)  # its 25 bps fee in
    # Meteora's SOL/USDC bins reach ±15 %: arbitrageurs sold it all the SOL it would
    # take, so it sells SOL and buys none, as a real pool left behind by the price does.
    meteora = market.venues["Meteora"]
    pool = meteora.pools["meteora:WSOL-USDC"]
    assert pool_depth(pool, "USDC") < 10**6  # under a dollar: dust its probes leave
    meteora.best_quote(usdc, sol, 100 * 10**6)
    with pytest.raises(PermanentVenueError) as caught:
        meteora.best_quote(sol, usdc, 10**9)
    assert caught.value.code == INSUFFICIENT_LIQUIDITY


@pytest.mark.parametrize(
    ("args", "field", "code"),
    [
        (("SOL", "USDC", MAX_MOVE_BPS + 0.5), "bps", "invalid_bps"),
        (("SOL", "USDC", -MAX_MOVE_BPS - 1), "bps", "invalid_bps"),
        (("SOL", "USDC", math.nan), "bps", "invalid_bps"),
        (("SOL", "USDC", math.inf), "bps", "invalid_bps"),
        (("SOL", "USDC", True), "bps", "invalid_bps"),
        (("DOGE", "USDC", 10), "tokenA", "unknown_token"),
        (("SOL", "nope", 10), "tokenB", "unknown_token"),
        (("SOL", "WSOL", 10), "tokenB", "same_token"),
        (("WOOF", "SOL", 10), "tokenA", "unknown_token"),  # upcoming: no pool holds it yet
    ],
)
def test_a_bad_move_is_refused_naming_the_field_and_changes_nothing(
    args: tuple[str, str, float], field: str, code: str
) -> None:
    market = fresh_market()
    seq = market.feed.last_seq
    states = {p.pool_id: p.state() for v in market.venues.values() for p in v.pools.values()}
    with pytest.raises(ControlError) as caught:
        market.move_price(*args)
    assert (caught.value.field, caught.value.code, caught.value.status) == (field, code, 400)
    assert isinstance(caught.value, ValueError)
    assert market.feed.last_seq == seq
    assert states == {
        p.pool_id: p.state() for v in market.venues.values() for p in v.pools.values()
    }
