"""The router: best single venue, split orders, skipped venues and guards."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from order_engine.routing import Router, gain_bps
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
from order_engine.venues.market_data import usd_to_base
from order_engine.venues.tokens import REGISTRY, Token

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


def worth(symbol: str, usd: int) -> tuple[Token, int]:
    token = REGISTRY.resolve(symbol)
    return token, usd_to_base(REGISTRY.pool_token(token).symbol, Decimal(usd))


def optimum(market: SimulatedMarket, token_in: Token, token_out: Token, amount: int) -> int:
    """The most any split of the amount between the venues gets, on a grid as fine as the
    router's refined one, or either venue alone."""
    raydium, meteora = market.venues["Raydium"], market.venues["Meteora"]
    best = max(v.best_quote(token_in, token_out, amount).amount_out for v in (raydium, meteora))
    for share in (amount * i // 200 for i in range(1, 200)):
        best = max(
            best,
            raydium.best_quote(token_in, token_out, share).amount_out
            + meteora.best_quote(token_in, token_out, amount - share).amount_out,
        )
    return best


async def takes_the_split_if_it_pays(
    router: Router, market: SimulatedMarket, token_in: Token, token_out: Token, amount: int
) -> bool:
    """Asserts the route gets within 1 bps of the optimum, and is split if that pays more
    than the router's threshold (1 bps) and 1 bps more; returns whether it did."""
    route = await router.route(token_in, token_out, amount)
    best = optimum(market, token_in, token_out, amount)
    order = f"{token_in.format(amount)} {token_in.symbol} to {token_out.symbol}"
    assert gain_bps(best, route.amount_out) <= 1, f"{order}: {route.reason}"
    pays = gain_bps(best, route.quotes[0].amount_out) > 2
    assert route.split or not pays, f"{order}: {route.reason}"
    return pays


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


async def test_a_split_that_pays_is_found_when_the_best_venue_fills_inside_one_bin() -> None:
    # Meteora's USDT/USDC bins are 1 bps apart and hold about $10k each: these orders often
    # fill on it with no price impact at all, yet Raydium may be cheaper at the margin.
    inside, paid = 0, 0
    for seed in range(20):
        market = SimulatedMarket(PROFILES["instant"], seed=seed)
        market.step(3)
        router = Router(list(market.venues.values()), quote_timeout=1, split_min_gain_bps=1)
        for (symbol_in, symbol_out), usd in itertools.product(
            (("USDT", "USDC"), ("USDC", "USDT")), (3_000, 10_000)
        ):
            token_in, amount = worth(symbol_in, usd)
            token_out = REGISTRY.resolve(symbol_out)
            quotes = [v.best_quote(token_in, token_out, amount) for v in market.venues.values()]
            if max(quotes, key=lambda q: q.amount_out).price_impact_bps >= 0.01:
                continue
            inside += 1
            paid += await takes_the_split_if_it_pays(router, market, token_in, token_out, amount)
    assert inside >= 10
    assert paid, "no order filling inside one bin is worth splitting: this proves nothing"


async def test_the_other_venue_is_judged_by_what_its_slices_get() -> None:
    # A venue may route a BONK/SOL or USDT/USDC order direct as a whole and through a third
    # token in small slices (or the other way round): what a slice moved there gets is not
    # what the whole order would. The best venue's fills here all have price impact of at
    # least the threshold, so only how the other venue is judged decides.
    other_path, paid = 0, 0
    for seed in range(14):
        market = SimulatedMarket(PROFILES["instant"], seed=seed)
        market.step(3)
        router = Router(list(market.venues.values()), quote_timeout=1, split_min_gain_bps=1)
        for (symbol_in, symbol_out), usd in itertools.product(
            (("BONK", "SOL"), ("USDT", "USDC")), (6_000, 15_000, 30_000)
        ):
            token_in, amount = worth(symbol_in, usd)
            token_out = REGISTRY.resolve(symbol_out)
            best, other = sorted(
                (v.best_quote(token_in, token_out, amount) for v in market.venues.values()),
                key=lambda q: -q.amount_out,
            )
            venue = market.venues[other.venue]
            sliced = venue.best_quote(token_in, token_out, amount // 200)
            if best.price_impact_bps < 1 or path(sliced) == path(other):
                continue
            other_path += 1
            paid += await takes_the_split_if_it_pays(router, market, token_in, token_out, amount)
    assert other_path >= 10
    assert paid, "no order a slice of which takes another path pays to split: this proves nothing"


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
