"""A simulated venue: direct and two-hop routes, its errors, and its faults."""

from __future__ import annotations

import asyncio
import itertools
import random
from decimal import Decimal

import pytest

from order_engine.venues import PROFILES, SimulatedMarket, SimulatedVenue
from order_engine.venues.base import (
    AMOUNT_TOO_SMALL,
    INSUFFICIENT_LIQUIDITY,
    NO_ROUTE,
    VENUE_DOWN,
    PermanentVenueError,
    TransientVenueError,
)
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.pool import DustAmount, PoolExhausted
from order_engine.venues.tokens import REGISTRY

SOL = REGISTRY.resolve("SOL")
WSOL = REGISTRY.resolve("WSOL")
USDC = REGISTRY.resolve("USDC")
BONK = REGISTRY.resolve("BONK")
JUP = REGISTRY.resolve("JUP")


@pytest.fixture
def market() -> SimulatedMarket:
    return SimulatedMarket(PROFILES["instant"], seed=1)


def sol_usdc_only() -> SimulatedVenue:
    pool = ConstantProductPool("only:WSOL-USDC", "WSOL", "USDC", 10**13, 1_500_000 * 10**6)
    return SimulatedVenue("Raydium", [pool], PROFILES["instant"], random.Random(0), lambda: 0.0)


def by_hand(venue: SimulatedVenue, path: list[str], amount: int, now: float) -> int | None:
    """Output of a path, chaining each pool's own quote; None if a pool cannot fill it."""
    for a, b in itertools.pairwise(path):
        pool = next(p for p in venue.pools.values() if {p.token_x, p.token_y} == {a, b})
        try:
            amount = pool.quote(a, amount, now).amount_out
        except (DustAmount, PoolExhausted):
            return None
    return amount


@pytest.mark.parametrize("venue_name", ["Raydium", "Meteora"])
@pytest.mark.parametrize("ui_amount", ["1000000", "500000000"])
async def test_two_hop_route_is_the_better_of_wsol_and_usdc(
    market: SimulatedMarket, venue_name: str, ui_amount: str
) -> None:
    venue = market.venues[venue_name]
    amount = BONK.to_base(Decimal(ui_amount))
    now = market.now()
    via = {mid: by_hand(venue, ["BONK", mid, "JUP"], amount, now) for mid in ("WSOL", "USDC")}
    assert None not in via.values()
    assert via["WSOL"] != via["USDC"]  # the choice matters
    best_mid = max(via, key=lambda mid: via[mid] or 0)

    quote = await venue.quote(BONK, JUP, amount)

    assert [(h.token_in, h.token_out) for h in quote.hops] == [
        ("BONK", best_mid),
        (best_mid, "JUP"),
    ]
    assert quote.amount_out == via[best_mid]
    assert quote.hops[0].amount_in == amount
    assert quote.hops[1].amount_in == quote.hops[0].amount_out
    assert quote.hops[1].amount_out == quote.amount_out
    assert (quote.venue, quote.token_in, quote.token_out) == (venue_name, BONK, JUP)


async def test_direct_route_when_the_pair_has_a_pool(market: SimulatedMarket) -> None:
    venue = market.venues["Raydium"]
    amount = SOL.to_base(Decimal("1.5"))
    pool = venue.pools["raydium:WSOL-USDC"]
    fill = pool.quote("WSOL", amount, 0.0)

    quote = await venue.quote(SOL, USDC, amount)

    # Native SOL stays SOL in the quote; the pool trades wSOL.
    assert (quote.token_in, quote.token_out) == (SOL, USDC)
    assert [(h.pool_id, h.token_in, h.token_out) for h in quote.hops] == [
        ("raydium:WSOL-USDC", "WSOL", "USDC")
    ]
    assert quote.amount_out == fill.amount_out
    assert quote.hops[0].fee == fill.fee
    assert quote.fee_bps == pytest.approx(25.0)
    assert quote.price == pytest.approx(fill.amount_out / 10**6 / 1.5)


async def test_quoting_never_moves_a_pool(market: SimulatedMarket) -> None:
    venue = market.venues["Meteora"]
    before = {pid: p.spot_price() for pid, p in venue.pools.items()}
    await venue.quote(BONK, JUP, BONK.to_base(Decimal(10**9)))
    await venue.quote_curve(SOL, USDC, [10**9, 10**12])
    assert {pid: p.spot_price() for pid, p in venue.pools.items()} == before


async def test_no_route_without_a_pool_path() -> None:
    with pytest.raises(PermanentVenueError) as caught:
        await sol_usdc_only().quote(BONK, JUP, 10**10)
    assert caught.value.code == NO_ROUTE


async def test_no_route_between_sol_and_wsol(market: SimulatedMarket) -> None:
    with pytest.raises(PermanentVenueError) as caught:
        await market.venues["Raydium"].quote(SOL, WSOL, 10**9)
    assert caught.value.code == NO_ROUTE


async def test_insufficient_liquidity_for_more_than_the_bins_hold(
    market: SimulatedMarket,
) -> None:
    # Meteora's SOL/USDC bins hold about $4M of USDC below the price: 1M SOL cannot fill.
    with pytest.raises(PermanentVenueError) as caught:
        await market.venues["Meteora"].quote(SOL, USDC, SOL.to_base(Decimal(1_000_000)))
    assert caught.value.code == INSUFFICIENT_LIQUIDITY


async def test_amount_too_small_for_one_base_unit(market: SimulatedMarket) -> None:
    with pytest.raises(PermanentVenueError) as caught:
        await market.venues["Raydium"].quote(SOL, USDC, 1)
    assert caught.value.code == AMOUNT_TOO_SMALL


async def test_quote_curve_answers_none_for_sizes_it_cannot_fill(market: SimulatedMarket) -> None:
    venue = market.venues["Meteora"]
    amounts = [1, SOL.to_base(Decimal(2)), SOL.to_base(Decimal(1_000_000))]
    curve = await venue.quote_curve(SOL, USDC, amounts)
    assert curve[0] is None
    assert curve[2] is None
    assert curve[1] == venue.best_quote(SOL, USDC, amounts[1])


async def test_quote_curve_raises_no_route() -> None:
    with pytest.raises(PermanentVenueError) as caught:
        await sol_usdc_only().quote_curve(BONK, JUP, [10**10])
    assert caught.value.code == NO_ROUTE


async def test_venue_down_raises_transient_venue_down(market: SimulatedMarket) -> None:
    venue = market.venues["Raydium"]
    venue.faults.down = True
    for call in (venue.quote(SOL, USDC, 10**9), venue.quote_curve(SOL, USDC, [10**9])):
        with pytest.raises(TransientVenueError) as caught:
            await call
        assert caught.value.code == VENUE_DOWN
        assert caught.value.transient
    venue.faults.down = False
    assert (await venue.quote(SOL, USDC, 10**9)).amount_out > 0


async def test_venue_timeout_never_answers(market: SimulatedMarket) -> None:
    venue = market.venues["Meteora"]
    venue.faults.timeout = True
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await venue.quote(SOL, USDC, 10**9)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await venue.quote_curve(SOL, USDC, [10**9])
