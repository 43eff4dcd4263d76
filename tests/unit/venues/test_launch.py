"""Upcoming tokens and their launches: the registry lists them without letting orders name
them, a launch creates the token's first pool (published whole on the feed, where a
follower sees a pool it never saw) and makes the token tradable, a follower's registry
learns that from the feed alone, and a profile may launch them on a schedule."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import base58
import pytest

from order_engine.market import MarketData
from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.controls import ControlError
from order_engine.venues.feed import AccountUpdate, FeedSubscription, Snapshot
from order_engine.venues.launches import (
    DEFAULT_LIQUIDITY_USD,
    LAUNCH_USD,
    MAX_LIQUIDITY_USD,
    note_launches,
    pool_depth,
)
from order_engine.venues.tokens import (
    ALL_TOKENS,
    REGISTRY,
    UPCOMING_TOKENS,
    TokenRegistry,
    TokenState,
    UnknownToken,
)

WAIT = 10.0  # seconds: a bound on waiting for what must come, never a pause
INSTANT = PROFILES["instant"]
ONE_SOL = 10**9


def registry() -> TokenRegistry:
    """A registry of this test's own: launches must not leak into the process's."""
    return TokenRegistry(ALL_TOKENS, upcoming=UPCOMING_TOKENS)


def market(seed: int = 1) -> SimulatedMarket:
    return SimulatedMarket(INSTANT, seed=seed, registry=registry())


async def next_update(sub: FeedSubscription) -> AccountUpdate:
    async with asyncio.timeout(WAIT):
        while True:
            message = await sub.next()
            if isinstance(message, AccountUpdate):
                return message


# -- the registry --------------------------------------------------------------------------


def test_upcoming_tokens_have_mints_of_their_own_the_same_in_every_process() -> None:
    mints = [t.mint for t in UPCOMING_TOKENS]
    assert all(len(base58.b58decode(mint)) == 32 for mint in mints)
    assert len(set(mints) | {t.mint for t in ALL_TOKENS}) == len(mints) + len(ALL_TOKENS)
    # Derived from the symbol alone: the chain service and every replica agree.
    assert REGISTRY.resolve("WOOF", upcoming=True).mint == (
        "2hJuRWpY5pQWALD3KS4dvU1Fukd4nmbY7UayZh4J8zMe"
    )
    assert {t.decimals for t in UPCOMING_TOKENS} == {6}
    assert set(LAUNCH_USD) == {t.symbol for t in UPCOMING_TOKENS}


def test_an_upcoming_token_resolves_only_when_asked_for() -> None:
    tokens = registry()
    woof = tokens.resolve("woof", upcoming=True)
    assert tokens.resolve(woof.mint, upcoming=True) == woof
    for name in ("WOOF", woof.mint):
        with pytest.raises(UnknownToken):
            tokens.resolve(name)
    assert woof not in list(tokens)
    assert tokens.state(woof) is TokenState.UPCOMING
    assert tokens.upcoming() == UPCOMING_TOKENS
    listed = {entry.token.symbol: entry.state for entry in tokens.listing()}
    assert listed == {
        **{t.symbol: TokenState.TRADABLE for t in ALL_TOKENS},
        **{t.symbol: TokenState.UPCOMING for t in UPCOMING_TOKENS},
    }
    # Existing tokens keep resolving as they always did; a registry without upcoming
    # tokens is the one it always was.
    assert tokens.resolve("sol") == REGISTRY.resolve("SOL")
    assert list(TokenRegistry()) == list(ALL_TOKENS)


def test_pools_decide_which_upcoming_tokens_are_tradable() -> None:
    tokens = registry()
    woof = tokens.resolve("WOOF", upcoming=True)
    assert tokens.observe_pool("WOOF", "WSOL") == (woof,)
    assert tokens.observe_pool("WOOF", "WSOL") == ()  # once
    assert tokens.resolve("WOOF") == woof
    assert woof in list(tokens)
    assert not tokens.mark_launched("WOOF")
    assert tokens.mark_launched("ZAPP")
    tokens.sync_pools(["ZAPP", "WSOL", "USDC"])  # a snapshot: WOOF has no pool there
    assert tokens.state(woof) is TokenState.UPCOMING
    assert tokens.state(tokens.resolve("ZAPP")) is TokenState.TRADABLE


# -- launching -----------------------------------------------------------------------------


@pytest.mark.parametrize("venue", ["Raydium", "Meteora"])
async def test_a_launch_publishes_a_new_pool_and_makes_the_token_tradable(venue: str) -> None:
    m = market()
    sol, woof = m.registry.resolve("SOL"), m.registry.resolve("WOOF", upcoming=True)
    follower = MarketData(max_staleness_slots=10)
    with m.feed.subscribe() as sub:
        follower.apply(await sub.next())  # the snapshot
        launch = m.launch(woof.mint, venue=venue)
        update = await next_update(sub)
    # Published whole, under a pool id the follower never saw.
    assert update.pool_id not in follower.pools
    assert (update.seq, update.pool_id, update.venue) == (launch.seq, launch.pool_id, venue)
    assert {update.state["token_x"], update.state["token_y"]} == {"WOOF", "WSOL"}
    follower.apply(update)
    _, mirror = follower.pools[launch.pool_id]
    assert pool_depth(mirror, "WSOL") == launch.quote_depth
    # About half the pool's value is wSOL (a concentrated pool: the bins below the price).
    sol_usd = m.fair.usd("WSOL")
    assert launch.quote_depth / ONE_SOL * sol_usd == pytest.approx(DEFAULT_LIQUIDITY_USD / 2, 0.02)
    assert (launch.token, launch.liquidity_usd, launch.price_usd) == (
        woof,
        DEFAULT_LIQUIDITY_USD,
        LAUNCH_USD["WOOF"],
    )

    assert m.registry.resolve("WOOF") == woof
    # The pool opens at the bonding curve's price: a small buy pays it, plus fee and
    # impact, on the market's venue and on the follower's copy alike.
    quote = m.venues[venue].best_quote(sol, woof, ONE_SOL // 100)
    woof_per_sol = sol_usd / float(LAUNCH_USD["WOOF"])
    assert quote.price == pytest.approx(woof_per_sol, rel=0.01)
    copy = follower.venue(venue)
    assert copy is not None
    assert copy.best_quote(sol, woof, ONE_SOL // 100) == quote


def test_the_market_moves_a_launched_token_like_any_other() -> None:
    m = market()
    m.launch("ZAPP", liquidity_usd=50_000)
    move = m.move_price("ZAPP", "SOL", 300)
    assert move.pools == ("raydium:ZAPP-WSOL",)
    m.step(20)  # fair prices, noise and arbitrage include the new pool
    pool = m.venues["Raydium"].pools["raydium:ZAPP-WSOL"]
    fair = m.fair.price("ZAPP", "WSOL")
    assert abs(math.log(pool.spot_price() / fair)) < 30 / 10_000  # within its fee of fair


@pytest.mark.parametrize(
    ("args", "field", "code", "status"),
    [
        (("DOGE",), "token", "unknown_token", 400),
        (("SOL",), "token", "already_launched", 409),
        (("WOOF", "Orca"), "venue", "unknown_venue", 400),
        (("WOOF", None, 5.0), "liquidityUsd", "invalid_liquidity", 400),
        (("WOOF", None, MAX_LIQUIDITY_USD * 2), "liquidityUsd", "invalid_liquidity", 400),
        (("WOOF", None, math.nan), "liquidityUsd", "invalid_liquidity", 400),
    ],
)
def test_a_bad_launch_is_refused_naming_the_field_and_changes_nothing(
    args: tuple[str, str | None, float | None], field: str, code: str, status: int
) -> None:
    m = market()
    seq = m.feed.last_seq
    with pytest.raises(ControlError) as caught:
        m.launch(*args)
    assert (caught.value.field, caught.value.code, caught.value.status) == (field, code, status)
    assert m.feed.last_seq == seq
    assert m.registry.upcoming() == UPCOMING_TOKENS


def test_a_token_launches_once() -> None:
    m = market()
    m.launch("GLORB")
    with pytest.raises(ControlError) as caught:
        m.launch("glorb", venue="Meteora")
    assert (caught.value.code, caught.value.status) == ("already_launched", 409)


def test_a_new_market_has_launched_nothing() -> None:
    tokens = registry()
    SimulatedMarket(INSTANT, registry=tokens).launch("SNEK")
    assert tokens.state(tokens.resolve("SNEK")) is TokenState.TRADABLE
    # A new market is a new chain: its registry says what its own pools hold.
    SimulatedMarket(INSTANT, registry=tokens)
    assert tokens.upcoming() == UPCOMING_TOKENS


# -- following -----------------------------------------------------------------------------


async def test_a_follower_learns_launches_from_the_feed_alone() -> None:
    """What a replica does: its own registry, kept by the chain's messages."""
    m = market()
    mine = registry()
    mine.mark_launched("MEOWL")  # left over from a chain that no longer exists
    with m.feed.subscribe() as sub:
        snapshot = await sub.next()
        assert note_launches(mine, snapshot) == ()
        assert mine.upcoming() == UPCOMING_TOKENS  # the snapshot has no MEOWL pool
        m.step()  # updates of existing pools launch nothing
        m.launch("MEOWL", venue="Meteora")
        launched = []
        async with asyncio.timeout(WAIT):
            while m.registry.upcoming() != mine.upcoming():
                launched += note_launches(mine, await sub.next())
    assert [t.symbol for t in launched] == ["MEOWL"]
    assert mine.resolve("MEOWL") == m.registry.resolve("MEOWL")
    # A snapshot taken after the launch has the pool: a follower starting now agrees.
    late = registry()
    assert [t.symbol for t in note_launches(late, m.feed.snapshot())] == ["MEOWL"]


# -- the schedule --------------------------------------------------------------------------


def test_only_the_realistic_profile_launches_on_its_own() -> None:
    assert PROFILES["instant"].launch_interval_s == 0
    assert PROFILES["realistic"].launch_interval_s > 0
    with pytest.raises(ValueError, match="launch_interval_s"):
        dataclasses.replace(INSTANT, launch_interval_s=-1)


async def test_a_profile_launches_every_upcoming_token_in_turn() -> None:
    profile = dataclasses.replace(INSTANT, launch_interval_s=0.01)
    m = SimulatedMarket(profile, registry=registry())
    m.launch("ZAPP")  # on command: its turn passes
    new_pools = []
    with m.feed.subscribe() as sub:
        snapshot = await sub.next()
        assert isinstance(snapshot, Snapshot)
        known = {pool.pool_id for pool in snapshot.pools}
        await m.start()
        try:
            while len(new_pools) < len(UPCOMING_TOKENS) - 1:
                update = await next_update(sub)
                if update.pool_id not in known:
                    known.add(update.pool_id)
                    new_pools.append(update.pool_id)
        finally:
            await m.stop()
    assert new_pools == [f"raydium:{s}-WSOL" for s in ("WOOF", "GLORB", "MEOWL", "SNEK")]
    assert m.registry.upcoming() == ()


def test_liquidity_is_what_the_caller_asked_for() -> None:
    m = market()
    launch = m.launch("WOOF", liquidity_usd=1_000_000)
    sol_usd = m.fair.usd("WSOL")
    assert launch.liquidity_usd == 1_000_000
    assert launch.quote_depth / ONE_SOL * sol_usd == pytest.approx(500_000, rel=0.001)
