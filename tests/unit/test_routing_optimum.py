"""The router against a brute-force optimum over the same pool snapshot: every way to split
the order between the two venues on a fine grid, and each venue alone, priced by the venues'
own `best_quote`. Whatever the pool math, the route the router picks gets within 1 bps of
the best of those (or of its threshold, below which it need not split), and is split
whenever splitting pays more than the threshold and 1 bps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from order_engine.config import VenueSettings
from order_engine.routing import Router, gain_bps
from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.base import (
    AMOUNT_TOO_SMALL,
    INSUFFICIENT_LIQUIDITY,
    PermanentVenueError,
    Quote,
    Venue,
)
from order_engine.venues.market_data import usd_to_base
from order_engine.venues.tokens import REGISTRY, Token
from order_engine.venues.venue import SimulatedVenue

PAIRS = (
    ("SOL", "USDC"),
    ("USDC", "SOL"),
    ("USDT", "USDC"),
    ("BONK", "SOL"),
    ("JUP", "USDC"),
    ("BONK", "JUP"),  # no pool of its own: two hops, via SOL or USDC
)
USD_SIZES = ("0.01", "1", "300", "3000", "15000", "50000")
DEFAULT_THRESHOLD = VenueSettings().split_min_gain_bps
# Each leg's output is rounded down to a base unit: a grid finer than the router's can land
# on luckier rounding than any share the router tries, by a unit or two. Only for the
# tiniest orders is that more than 1 bps.
ROUNDING_UNITS = 2


@dataclass(frozen=True, slots=True)
class Optimum:
    alone: int  # the better venue's output for the whole order
    best: int  # the most of that and every split on the grid


def output(venue: SimulatedVenue, token_in: Token, token_out: Token, amount: int) -> int | None:
    try:
        return venue.best_quote(token_in, token_out, amount).amount_out
    except PermanentVenueError as exc:
        if exc.code in (AMOUNT_TOO_SMALL, INSUFFICIENT_LIQUIDITY):
            return None
        raise


def brute_force(
    market: SimulatedMarket, token_in: Token, token_out: Token, amount: int, grid: int
) -> Optimum:
    raydium, meteora = market.venues["Raydium"], market.venues["Meteora"]
    alone = [output(v, token_in, token_out, amount) for v in (raydium, meteora)]
    best = max(out for out in alone if out is not None)
    single = best
    for share in sorted({amount * i // grid for i in range(1, grid)} - {0}):
        a = output(raydium, token_in, token_out, share)
        b = output(meteora, token_in, token_out, amount - share)
        if a is not None and b is not None:
            best = max(best, a + b)
    return Optimum(single, best)


class InPlace:
    """A venue quoted from pools held in this process (`LocalCurve`), as the streamed
    mirrors are: the router probes it in place, and asks the best venue for its quote
    beyond the order only once it knows which is best."""

    def __init__(self, venue: SimulatedVenue) -> None:
        self.name = venue.name
        self._venue = venue

    async def quote(self, token_in: Token, token_out: Token, amount_in: int) -> Quote:
        return await self._venue.quote(token_in, token_out, amount_in)

    async def quote_curve(
        self, token_in: Token, token_out: Token, amounts_in: Sequence[int]
    ) -> list[Quote | None]:
        return await self._venue.quote_curve(token_in, token_out, amounts_in)

    def curve_now(
        self, token_in: Token, token_out: Token, amounts_in: Sequence[int]
    ) -> list[Quote | None]:
        return self._venue.curve(token_in, token_out, amounts_in)


QUOTING = ("by calls", "in place")


def router_for(market: SimulatedMarket, threshold: float, quoting: str = "by calls") -> Router:
    # No price impact limit: the largest orders are refused by it otherwise, and what is
    # compared here is the route, not the guard.
    venues: list[Venue] = list(market.venues.values())
    if quoting == "in place":
        venues = [InPlace(v) for v in market.venues.values()]
    return Router(
        venues,
        quote_timeout=1,
        split_min_gain_bps=threshold,
        max_price_impact_bps=math.inf,
    )


def misses(got: int, split: bool, optimum: Optimum, threshold: float) -> str | None:
    """Why the route falls short of the optimum, or None. It may stay whole when splitting
    gains less than the threshold, so it must be within max(1 bps, threshold) of the best,
    and split whenever that gains more than the threshold and 1 bps."""
    gap = optimum.best - got
    if gap > max(optimum.best * max(1.0, threshold) / 10_000, ROUNDING_UNITS):
        return f"{gain_bps(optimum.best, got):.2f} bps short of the optimum"
    pays = optimum.best - optimum.alone > ROUNDING_UNITS
    if pays and gain_bps(optimum.best, optimum.alone) > threshold + 1 and not split:
        return f"not split, though splitting gains {gain_bps(optimum.best, optimum.alone):.2f} bps"
    return None


def worth(symbol: str, usd: str) -> tuple[Token, int]:
    token = REGISTRY.resolve(symbol)
    return token, usd_to_base(REGISTRY.pool_token(token).symbol, Decimal(usd))


@pytest.mark.parametrize("quoting", QUOTING)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_route_is_within_1_bps_of_the_best_split(seed: int, quoting: str) -> None:
    market = SimulatedMarket(PROFILES["instant"], seed=seed)
    market.step(3)  # the venues' prices apart, differently for each seed
    routers = {t: router_for(market, t, quoting) for t in (0.01, DEFAULT_THRESHOLD)}
    failures, paying = [], 0
    for (symbol_in, symbol_out), usd in ((p, u) for p in PAIRS for u in USD_SIZES):
        token_in, amount = worth(symbol_in, usd)
        token_out = REGISTRY.resolve(symbol_out)
        optimum = brute_force(market, token_in, token_out, amount, grid=1_000)
        paying += gain_bps(optimum.best, optimum.alone) > DEFAULT_THRESHOLD + 1
        for threshold, router in routers.items():
            route = await router.route(token_in, token_out, amount)
            why = misses(route.amount_out, route.split, optimum, threshold)
            if why is not None:
                failures.append(f"${usd} {symbol_in}/{symbol_out} (threshold {threshold}): {why}")
    assert failures == []
    assert paying >= 3, "too few orders worth splitting for the sweep to test the search"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    steps=st.integers(0, 20),
    pair=st.sampled_from(
        [*PAIRS, ("USDC", "BONK"), ("USDT", "SOL"), ("RAY", "JUP"), ("JUP", "SOL")]
    ),
    usd=st.integers(-2, 47).map(lambda e: str(Decimal(10) ** (Decimal(e) / 10))),
    threshold=st.sampled_from([0.25, DEFAULT_THRESHOLD, 3.0]),
    quoting=st.sampled_from(QUOTING),
)
async def test_the_router_never_declines_a_split_that_pays(
    seed: int, steps: int, pair: tuple[str, str], usd: str, threshold: float, quoting: str
) -> None:
    market = SimulatedMarket(PROFILES["instant"], seed=seed)
    market.step(steps)
    token_in, amount = worth(pair[0], usd)
    token_out = REGISTRY.resolve(pair[1])
    optimum = brute_force(market, token_in, token_out, amount, grid=200)
    route = await router_for(market, threshold, quoting).route(token_in, token_out, amount)
    assert misses(route.amount_out, route.split, optimum, threshold) is None
