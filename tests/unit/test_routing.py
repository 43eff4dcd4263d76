"""The router: best single venue, split orders, skipped venues and guards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from random import Random

import pytest

from order_engine.routing import Route, Router, gain_bps
from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.base import (
    INSUFFICIENT_LIQUIDITY,
    NO_QUOTES,
    NO_ROUTE,
    PRICE_IMPACT_TOO_HIGH,
    VENUE_DOWN,
    VENUE_TIMEOUT,
    PermanentVenueError,
    Quote,
    TransientVenueError,
)
from order_engine.venues.cpmm import TRADE_FEE_RATE, ConstantProductPool
from order_engine.venues.dlmm import DlmmPool, bin_id_for_price
from order_engine.venues.market_data import STABLE_FEE_RATE, reference_price, usd_to_base
from order_engine.venues.pool import Pool
from order_engine.venues.tokens import REGISTRY, Token
from order_engine.venues.venue import SimulatedVenue

SOL = REGISTRY.resolve("SOL")
WSOL = REGISTRY.resolve("WSOL")
USDC = REGISTRY.resolve("USDC")


@pytest.fixture
def market() -> SimulatedMarket:
    return SimulatedMarket(PROFILES["instant"], seed=1)


@pytest.fixture
def router(market: SimulatedMarket) -> Router:
    return Router(
        list(market.venues.values()), quote_timeout=1, split_min_gain_bps=1, split_steps=20
    )


def sol(amount: str) -> int:
    return SOL.to_base(Decimal(amount))


def alone(market: SimulatedMarket, amount: int) -> dict[str, int]:
    """Each venue's output for the whole amount."""
    return {
        name: venue.best_quote(SOL, USDC, amount).amount_out
        for name, venue in market.venues.items()
    }


def path(quote: Quote) -> list[str]:
    return [hop.pool_id for hop in quote.hops]


def usd(symbol: str, amount: int) -> int:
    """`amount` dollars of the token, in base units, at its reference price."""
    return usd_to_base(REGISTRY.pool_token(REGISTRY.resolve(symbol)).symbol, Decimal(amount))


def cpmm(x: str, y: str, usd_a_side: int, fee_rate: int = TRADE_FEE_RATE) -> ConstantProductPool:
    """A Raydium pool at the reference price."""
    return ConstantProductPool(
        f"raydium:{x}-{y}", x, y, usd(x, usd_a_side), usd(y, usd_a_side), fee_rate
    )


def dlmm(x: str, y: str, bin_step: int, usd_a_bin: int) -> DlmmPool:
    """A Meteora pool whose active bin is at the reference price, with 100 bins either side
    of it; each bin holds `usd_a_bin` (the active one half in each token)."""
    return DlmmPool(
        f"meteora:{x}-{y}",
        x,
        y,
        bin_step=bin_step,
        active_id=bin_id_for_price(reference_price(x, y), bin_step),
        bins_each_side=100,
        y_per_bin=usd(y, usd_a_bin),
    )


def landed(pool: ConstantProductPool, token_in: str, usd_in: int) -> None:
    """Someone else's trade lands on the pool; the arbitrageurs have not answered yet."""
    pool.swap(token_in, usd(token_in, usd_in))


def two_venues(
    raydium: Sequence[ConstantProductPool], meteora: Sequence[DlmmPool]
) -> dict[str, SimulatedVenue]:
    """Both venues, answering at once, on a clock that stands still."""
    pools: dict[str, Sequence[Pool]] = {"Raydium": raydium, "Meteora": meteora}
    return {
        name: SimulatedVenue(name, venue_pools, PROFILES["instant"], Random(0), lambda: 0.0)
        for name, venue_pools in pools.items()
    }


@dataclass(frozen=True, slots=True)
class Optimum:
    alone: Quote  # the better venue's quote for the whole order
    best: int  # the most any split on the grid gets, or either venue alone
    raydium: Quote | None  # Raydium's leg of that split (None: one venue alone is best)


def optimum(
    venues: dict[str, SimulatedVenue], token_in: Token, token_out: Token, amount: int
) -> Optimum:
    """Brute force: every split of the amount between the venues on a grid of 1,000 shares
    (the router's finest step is a 200th), and either venue alone, priced by the venues' own
    `best_quote`."""
    raydium, meteora = venues["Raydium"], venues["Meteora"]
    single = max(
        (v.best_quote(token_in, token_out, amount) for v in (raydium, meteora)),
        key=lambda q: q.amount_out,
    )
    best, leg = single.amount_out, None
    for share in (amount * i // 1_000 for i in range(1, 1_000)):
        a = raydium.best_quote(token_in, token_out, share)
        b = meteora.best_quote(token_in, token_out, amount - share)
        if a.amount_out + b.amount_out > best:
            best, leg = a.amount_out + b.amount_out, a
    return Optimum(single, best, leg)


def short_of(best: Optimum, route: Route) -> str:
    return f"{gain_bps(best.best, route.amount_out):.2f} bps short of the optimum: {route.reason}"


async def test_large_order_is_split_and_beats_either_venue_alone(
    market: SimulatedMarket, router: Router
) -> None:
    amount = sol("2000")
    singles = alone(market, amount)

    route = await router.route(SOL, USDC, amount)

    assert route.split
    assert {leg.venue for leg in route.legs} == {"Raydium", "Meteora"}
    assert sum(leg.amount_in for leg in route.legs) == amount
    assert all(leg.amount_in > 0 for leg in route.legs)
    assert route.amount_out > max(singles.values())
    assert gain_bps(route.amount_out, max(singles.values())) >= 1
    assert route.reason.startswith("split ")
    # The whole-amount quotes are kept, best first.
    assert [q.amount_out for q in route.quotes] == sorted(singles.values(), reverse=True)


@pytest.mark.parametrize("ui_amount", ["300", "2000", "20000"])
async def test_split_is_as_good_as_a_brute_force_grid(
    market: SimulatedMarket, router: Router, ui_amount: str
) -> None:
    amount = sol(ui_amount)
    raydium, meteora = market.venues["Raydium"], market.venues["Meteora"]
    brute = max(
        raydium.best_quote(SOL, USDC, share).amount_out
        + meteora.best_quote(SOL, USDC, amount - share).amount_out
        for share in (amount * i // 200 for i in range(1, 200))
    )

    route = await router.route(SOL, USDC, amount)

    assert route.split
    # The refined grid is as fine as the brute force's (amount / 200) around the best coarse
    # cell, so the router matches it; the coarse 20-step grid alone misses by up to ~0.2 bps.
    assert gain_bps(brute, route.amount_out) <= 0.01


async def test_small_order_goes_whole_to_the_best_venue(
    market: SimulatedMarket, router: Router
) -> None:
    amount = sol("1.5")
    singles = alone(market, amount)
    best = max(singles, key=lambda name: singles[name])
    assert singles["Raydium"] != singles["Meteora"]

    route = await router.route(SOL, USDC, amount)

    assert not route.split
    [leg] = route.legs
    assert (leg.venue, leg.amount_in, leg.amount_out) == (best, amount, singles[best])
    assert route.venue == best
    assert route.skipped == ()
    assert route.reason.startswith("best output")


async def test_best_single_venue_wins_whichever_it_is(
    market: SimulatedMarket, router: Router
) -> None:
    amount = sol("1.5")
    winners = set()
    for _ in range(100):
        market.step(5)
        singles = alone(market, amount)
        route = await router.route(SOL, USDC, amount)
        assert not route.split
        assert route.amount_out == max(singles.values())
        assert route.legs[0].venue == max(singles, key=lambda name: singles[name])
        winners.add(route.legs[0].venue)
    assert winners == {"Raydium", "Meteora"}


# The market's arbitrageurs keep the venues within their fees of each other and leave no
# route through a third token much better than a pair's own pool, so the cases below, where
# splitting pays, are built pool by pool: as they are just after someone else's trade lands,
# before the arbitrageurs answer it.


@pytest.mark.parametrize(("symbol_in", "symbol_out"), [("USDT", "USDC"), ("USDC", "USDT")])
async def test_a_split_that_pays_is_found_when_the_best_venue_fills_inside_one_bin(
    symbol_in: str, symbol_out: str
) -> None:
    # Meteora's USDT/USDC bins are 1 bps apart and its active bin holds $50k a side: a $20k
    # order fills inside it, with no price impact at all. On Raydium's pool ($2M a side, 1
    # bps fee) a $5k buy of the order's input token has just landed: its first units pay
    # ~50 bps more than Meteora's bin, though the whole order's price impact there (~100
    # bps) leaves Meteora the better venue alone. Moving about a quarter pays ~6 bps.
    token_in, token_out = REGISTRY.resolve(symbol_in), REGISTRY.resolve(symbol_out)
    raydium = cpmm("USDT", "USDC", usd_a_side=2_000_000, fee_rate=STABLE_FEE_RATE)
    landed(raydium, symbol_out, usd_in=5_000)
    venues = two_venues([raydium], [dlmm("USDT", "USDC", bin_step=1, usd_a_bin=100_000)])
    router = Router(list(venues.values()), quote_timeout=1, split_min_gain_bps=1)
    amount = usd(symbol_in, 20_000)
    best = optimum(venues, token_in, token_out, amount)
    assert best.alone.venue == "Meteora"
    assert best.alone.price_impact_bps < 0.01  # below any threshold: it fills inside the bin
    assert gain_bps(best.best, best.alone.amount_out) > 3, "splitting must pay to prove anything"

    route = await router.route(token_in, token_out, amount)

    assert gain_bps(best.best, route.amount_out) <= 1, short_of(best, route)
    assert route.split, route.reason
    assert {leg.venue for leg in route.legs} == {"Raydium", "Meteora"}
    assert sum(leg.amount_in for leg in route.legs) == amount


@pytest.mark.parametrize("slices_take", ["two hops", "the direct pool"])
async def test_the_other_venue_is_judged_by_what_its_slices_get(slices_take: str) -> None:
    # Raydium routes the whole order one way and small slices of it another: what a slice
    # moved there gets is not what the whole order would. Meteora (1 bps bins of $2k) is the
    # best venue alone, with a price impact above the threshold (~5 bps), so only how
    # Raydium is judged decides whether the split is searched.
    if slices_take == "two hops":
        # The whole order takes a deep direct pool at the standard 25 bps fee. A $12k buy of
        # USDT has just landed on a shallower USDT/WSOL pool: through wSOL the first units
        # get more than Meteora's last, net of two 25 bps fees.
        direct = cpmm("USDT", "USDC", usd_a_side=10_000_000)
        usdt_wsol = cpmm("USDT", "WSOL", usd_a_side=2_000_000)
        landed(usdt_wsol, "WSOL", usd_in=12_000)
        wsol_usdc = cpmm("WSOL", "USDC", usd_a_side=2_000_000)
    else:
        # A $1.5k buy of USDT has just landed on a shallow direct pool (1 bps fee), whose
        # first units get more than Meteora's last; the whole order is too big for it and
        # goes through wSOL's deep pools instead, paying two 25 bps fees.
        direct = cpmm("USDT", "USDC", usd_a_side=200_000, fee_rate=STABLE_FEE_RATE)
        landed(direct, "USDC", usd_in=1_500)
        usdt_wsol = cpmm("USDT", "WSOL", usd_a_side=20_000_000)
        wsol_usdc = cpmm("WSOL", "USDC", usd_a_side=20_000_000)
    venues = two_venues(
        [direct, usdt_wsol, wsol_usdc], [dlmm("USDT", "USDC", bin_step=1, usd_a_bin=2_000)]
    )
    router = Router(list(venues.values()), quote_timeout=1, split_min_gain_bps=1)
    usdt = REGISTRY.resolve("USDT")
    amount = usd("USDT", 20_000)
    best = optimum(venues, usdt, USDC, amount)
    assert best.alone.venue == "Meteora"
    assert best.alone.price_impact_bps >= 1
    assert gain_bps(best.best, best.alone.amount_out) > 3, "splitting must pay to prove anything"
    # Along the whole order's path even Raydium's first units get less than Meteora's last:
    # judged by that path, no split could pay. The optimum's Raydium leg takes the other.
    whole = venues["Raydium"].best_quote(usdt, USDC, amount)
    step = amount // 200  # the router's finest leg
    last = venues["Meteora"].best_quote(usdt, USDC, amount + step).amount_out
    assert venues["Raydium"].execute(whole.hops, step, commit=False) < last - best.alone.amount_out
    assert best.raydium is not None
    assert len(path(best.raydium)) == (2 if slices_take == "two hops" else 1) != len(path(whole))

    route = await router.route(usdt, USDC, amount)

    assert gain_bps(best.best, route.amount_out) <= 1, short_of(best, route)
    assert route.split, route.reason
    [leg] = [leg for leg in route.legs if leg.venue == "Raydium"]
    assert path(leg) == path(best.raydium)


async def test_no_split_when_it_does_not_gain_enough(market: SimulatedMarket) -> None:
    router = Router(
        list(market.venues.values()),
        quote_timeout=1,
        split_min_gain_bps=10_000,
        split_steps=20,
    )
    amount = sol("2000")
    route = await router.route(SOL, USDC, amount)
    assert not route.split
    assert route.amount_out == max(alone(market, amount).values())


@pytest.mark.parametrize(("fault", "code"), [("down", VENUE_DOWN), ("timeout", VENUE_TIMEOUT)])
async def test_failing_venue_is_skipped_and_named(
    market: SimulatedMarket, fault: str, code: str
) -> None:
    router = Router(list(market.venues.values()), quote_timeout=0.05)
    setattr(market.venues["Meteora"].faults, fault, True)
    amount = sol("2000")  # big enough to split, were both venues answering

    route = await router.route(SOL, USDC, amount)

    assert route.skipped == (("Meteora", code),)
    assert [leg.venue for leg in route.legs] == ["Raydium"]
    assert route.amount_out == market.venues["Raydium"].best_quote(SOL, USDC, amount).amount_out
    assert "Meteora" in route.reason


async def test_all_venues_down_is_transient_no_quotes(
    market: SimulatedMarket, router: Router
) -> None:
    for venue in market.venues.values():
        venue.faults.down = True
    with pytest.raises(TransientVenueError) as caught:
        await router.route(SOL, USDC, sol("1.5"))
    assert caught.value.code == NO_QUOTES


async def test_permanent_failure_everywhere_is_permanent(router: Router) -> None:
    with pytest.raises(PermanentVenueError) as caught:
        await router.route(SOL, WSOL, sol("1.5"))
    assert caught.value.code == NO_ROUTE


async def test_absurd_order_is_refused_for_price_impact(
    market: SimulatedMarket, router: Router
) -> None:
    amount = sol("100000")  # ~$15M into pools holding a few million
    with pytest.raises(PermanentVenueError) as caught:
        await router.route(SOL, USDC, amount)
    assert caught.value.code == PRICE_IMPACT_TOO_HIGH
    # Raydium quoted it (at a ruinous price); Meteora's bins could not fill it at all.
    assert market.venues["Raydium"].best_quote(SOL, USDC, amount).price_impact_bps > 1_000
    with pytest.raises(PermanentVenueError) as meteora:
        market.venues["Meteora"].best_quote(SOL, USDC, amount)
    assert meteora.value.code == INSUFFICIENT_LIQUIDITY


async def test_price_impact_limit_applies_to_the_route(market: SimulatedMarket) -> None:
    amount = sol("2000")
    strict = Router(list(market.venues.values()), quote_timeout=1, max_price_impact_bps=10)
    with pytest.raises(PermanentVenueError) as caught:
        await strict.route(SOL, USDC, amount)
    assert caught.value.code == PRICE_IMPACT_TOO_HIGH
    loose = Router(list(market.venues.values()), quote_timeout=1, max_price_impact_bps=1_000)
    assert (await loose.route(SOL, USDC, amount)).amount_out > 0


def test_router_needs_a_venue() -> None:
    with pytest.raises(ValueError, match="at least one venue"):
        Router([], quote_timeout=1)
