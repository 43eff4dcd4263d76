"""The simulated market: one fair price per token, other traders' noise, and arbitrageurs who
keep every pool within its fee of fair, so the venues' prices stay within the no-arbitrage
band of each other and no route through a third token comes free; deterministic under a
seed."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.arbitrage import marginal_rate
from order_engine.venues.base import PermanentVenueError
from order_engine.venues.cpmm import FEE_DENOMINATOR as CPMM_FEES
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import FEE_DENOMINATOR as DLMM_FEES
from order_engine.venues.dlmm import DlmmPool
from order_engine.venues.fair_prices import FairPrices
from order_engine.venues.market_data import (
    MOTION,
    POOLS,
    REFERENCE_USD,
    reference_price,
    usd_to_base,
)
from order_engine.venues.pool import Pool
from order_engine.venues.tokens import REGISTRY

INSTANT, REALISTIC = PROFILES["instant"], PROFILES["realistic"]
SOL = REGISTRY.resolve("SOL")
USDC = REGISTRY.resolve("USDC")
ONE_SOL = 10**9
# Rounding of a $1 swap: one base unit of $1 of RAY (6 decimals, $2) is 2e-6 of it, so a
# trade this much better than fair is no opportunity.
EDGE = 5e-6


def probe(token: str) -> int:
    return usd_to_base(token, Decimal(1))


def every_pool(market: SimulatedMarket) -> list[Pool]:
    return [pool for venue in market.venues.values() for pool in venue.pools.values()]


def prices(market: SimulatedMarket) -> dict[str, float]:
    return {pool.pool_id: pool.spot_price() for pool in every_pool(market)}


def pool_of(market: SimulatedMarket, venue: str, x: str, y: str) -> Pool:
    return market.venues[venue].pools[f"{venue.lower()}:{x}-{y}"]


def rates(market: SimulatedMarket, pool: Pool) -> tuple[float, float]:
    """What the next unit gets selling x and selling y, each against fair (1 = fair)."""
    fair = market.fair.price(pool.token_x, pool.token_y)
    sell_x = marginal_rate(pool, pool.token_x, market.now(), probe)
    sell_y = marginal_rate(pool, pool.token_y, market.now(), probe)
    assert sell_x is not None and sell_y is not None
    return sell_x / fair, sell_y * fair


def mid_and_fee(pool: Pool, now: float) -> tuple[float, float]:
    """The pool's mid price (between what a tiny swap each way gets before fees) and the
    larger of the two fees: a DLMM pool's `spot_price` can be a whole bin off the mid."""
    got, fees = [], []
    for token in (pool.token_x, pool.token_y):
        fill = pool.quote(token, probe(token), now)
        got.append(fill.amount_out / (fill.amount_in - fill.fee))
        fees.append(fill.fee / fill.amount_in)
    return math.sqrt(got[0] / got[1]), max(fees)


def base_fee(pool: Pool) -> float:
    if isinstance(pool, ConstantProductPool):
        return pool.fee_rate / CPMM_FEES
    assert isinstance(pool, DlmmPool)
    return pool.base_fee_rate / DLMM_FEES


def half_bin_bps(pool: Pool) -> float:
    return pool.bin_step / 2 if isinstance(pool, DlmmPool) else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


# -- as built --------------------------------------------------------------------------


def test_every_pool_spec_is_built_on_its_venue() -> None:
    market = SimulatedMarket(INSTANT)
    assert set(market.venues) == {"Raydium", "Meteora"}
    built = {
        (venue.name, pool.token_x, pool.token_y)
        for venue in market.venues.values()
        for pool in venue.pools.values()
    }
    assert built == {(s.venue, s.token_x, s.token_y) for s in POOLS}


def test_the_venues_differ_from_the_start_but_nothing_to_arbitrage() -> None:
    market = SimulatedMarket(INSTANT, seed=4)
    for pool in every_pool(market):
        assert max(rates(market, pool)) <= 1 + EDGE, pool.pool_id
    spreads = [
        pool_of(market, "Meteora", s.token_x, s.token_y).spot_price()
        / pool_of(market, "Raydium", s.token_x, s.token_y).spot_price()
        for s in POOLS
        if s.venue == "Raydium"
    ]
    assert sum(abs(spread - 1) > 1e-4 for spread in spreads) >= len(spreads) // 2
    # Opened, not traded: a DLMM pool has no last swap yet.
    assert all(p.last_update == -math.inf for p in every_pool(market) if isinstance(p, DlmmPool))


# -- determinism -----------------------------------------------------------------------


def test_same_seed_same_prices_after_the_same_steps() -> None:
    a = SimulatedMarket(INSTANT, seed=7)
    b = SimulatedMarket(INSTANT, seed=7)
    assert prices(a) == prices(b)
    a.step(150)
    b.step(150)
    assert prices(a) == prices(b)
    assert a.now() == b.now() == 150.0
    q = a.venues["Meteora"].best_quote(SOL, USDC, 1_000 * ONE_SOL)
    assert q == b.venues["Meteora"].best_quote(SOL, USDC, 1_000 * ONE_SOL)


def test_different_seeds_different_prices() -> None:
    a = SimulatedMarket(INSTANT, seed=1)
    b = SimulatedMarket(INSTANT, seed=2)
    a.step(50)
    b.step(50)
    pa, pb = prices(a), prices(b)
    assert sum(pa[pid] != pb[pid] for pid in pa) >= len(pa) // 2


def test_steps_move_prices() -> None:
    market = SimulatedMarket(INSTANT, seed=3)
    start = prices(market)
    market.step(20)
    moved = prices(market)
    assert sum(start[pid] != moved[pid] for pid in start) >= len(start) // 2


PAIRS = [("SOL", "USDC"), ("USDT", "USDC"), ("BONK", "SOL"), ("JUP", "USDC"), ("SOL", "USDT")]
trades = st.lists(
    st.tuples(
        st.sampled_from(["Raydium", "Meteora"]),
        st.sampled_from(PAIRS),
        st.booleans(),  # which way
        st.sampled_from([1_000, 50_000, 500_000]),  # USD
        st.integers(0, 3),  # steps after it
    ),
    max_size=6,
)


def trade(market: SimulatedMarket, venue: str, pair: tuple[str, str], back: bool, usd: int) -> None:
    """An order landing as the chain lands it: the venue's best route, executed."""
    symbol_in, symbol_out = reversed(pair) if back else pair
    token_in, token_out = REGISTRY.resolve(symbol_in), REGISTRY.resolve(symbol_out)
    pool_token = REGISTRY.pool_token(token_in).symbol
    amount = usd_to_base(pool_token, Decimal(usd))
    try:
        quote = market.venues[venue].best_quote(token_in, token_out, amount)
    except PermanentVenueError:
        return
    market.venues[venue].execute(quote.hops, amount, commit=True)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), orders=trades)
def test_same_seed_and_same_trades_same_market(
    seed: int, orders: list[tuple[str, tuple[str, str], bool, int, int]]
) -> None:
    a, b = SimulatedMarket(REALISTIC, seed=seed), SimulatedMarket(REALISTIC, seed=seed)
    for market in (a, b):
        for venue, pair, back, usd, steps in orders:
            trade(market, venue, pair, back, usd)
            market.step(steps)
    assert [p.state() for p in every_pool(a)] == [p.state() for p in every_pool(b)]
    assert a.fair.usd("WSOL") == b.fair.usd("WSOL")


# -- arbitrage -------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), orders=trades)
@example(  # a RAY/WSOL pool left 1.1e-6 better than fair: within a base unit of $1
    seed=878,
    orders=[("Raydium", ("SOL", "USDC"), False, 1000, s) for s in (0, 1, 1)],
)
def test_after_a_step_no_trade_against_fair_pays_whatever_landed_before(
    seed: int, orders: list[tuple[str, tuple[str, str], bool, int, int]]
) -> None:
    market = SimulatedMarket(REALISTIC, seed=seed)
    for venue, pair, back, usd, steps in orders:
        trade(market, venue, pair, back, usd)
        market.step(steps)
    market.step()  # the arbitrageurs' answer to the last order
    for pool in every_pool(market):
        # Neither way does the next unit get more than it is worth, so no round trip
        # through any pools (a triangle, two venues) can pay either.
        assert max(rates(market, pool)) <= 1 + EDGE, pool.pool_id


def test_venue_spreads_stay_inside_the_no_arbitrage_band() -> None:
    for x, y in (("WSOL", "USDC"), ("USDT", "USDC")):
        spreads, excess = [], []
        for seed in (1, 2, 3):
            market = SimulatedMarket(REALISTIC, seed=seed)
            raydium, meteora = (pool_of(market, v, x, y) for v in ("Raydium", "Meteora"))
            base_band = (base_fee(raydium) + base_fee(meteora)) * 10_000
            # A DLMM pool's mid sits between two bins when the one it trades at is drained.
            tolerance = half_bin_bps(meteora) + 0.5
            for _ in range(400):
                market.step()
                (r, r_fee), (m, m_fee) = (mid_and_fee(p, market.now()) for p in (raydium, meteora))
                spread = abs(math.log(m / r)) * 10_000
                spreads.append(spread)
                # The band with the fees charged now: a DLMM pool's variable fee widens it.
                excess.append(spread - (r_fee + m_fee) * 10_000)
        assert percentile(excess, 99) <= tolerance, (x, y)
        assert max(excess) <= tolerance, (x, y)
        assert percentile(spreads, 99) <= base_band + tolerance, (x, y)
        assert statistics.median(spreads) > base_band / 10  # the venues do differ


def test_no_route_through_a_third_token_beats_a_pools_own_by_more_than_its_fees() -> None:
    # Out through two hops, back through the pair's own pool: if that returned more than
    # went in, the two-hop route would beat the pool by more than its fee taken both ways.
    worst = -math.inf
    for seed in (1, 2, 3):
        market = SimulatedMarket(REALISTIC, seed=seed)
        for _ in range(200):
            market.step()
            now = market.now()
            for venue in market.venues.values():
                by_pair = {frozenset((p.token_x, p.token_y)): p for p in venue.pools.values()}
                for pair, direct in by_pair.items():
                    for a, b in itertools.permutations(pair):
                        for mid in ("WSOL", "USDC"):
                            first = by_pair.get(frozenset((a, mid)))
                            second = by_pair.get(frozenset((mid, b)))
                            if mid in pair or first is None or second is None:
                                continue
                            amount = probe(a)
                            hop = first.quote(a, amount, now).amount_out
                            out = second.quote(mid, hop, now).amount_out
                            back = direct.quote(b, out, now).amount_out
                            worst = max(worst, back / amount - 1)
                            again = direct.quote(a, amount, now).amount_out
                            hop = second.quote(b, again, now).amount_out
                            back = first.quote(mid, hop, now).amount_out
                            worst = max(worst, back / amount - 1)
    assert worst <= 1e-5  # a tenth of a bps: three swaps' rounding of a $1 order


# -- motion ----------------------------------------------------------------------------


def test_stablecoins_move_by_basis_points_and_volatile_tokens_by_their_volatility() -> None:
    market = SimulatedMarket(INSTANT, seed=11)  # one-second ticks
    stable = [pool_of(market, v, "USDT", "USDC") for v in ("Raydium", "Meteora")]
    sol = pool_of(market, "Raydium", "WSOL", "USDC")
    fair_sol, fair_bonk, stable_mids, sol_mids = [], [], [], []
    for _ in range(1_500):
        market.step()
        fair_sol.append(math.log(market.fair.usd("WSOL")))
        fair_bonk.append(math.log(market.fair.usd("BONK")))
        stable_mids.append([mid_and_fee(p, market.now())[0] for p in stable])
        sol_mids.append(mid_and_fee(sol, market.now())[0])
    reference = reference_price("USDT", "USDC")
    # Stablecoins: within a few bps of each other all along, a few bps per step at most.
    off = [abs(math.log(m / reference)) * 10_000 for mids in stable_mids for m in mids]
    assert max(off) < 10
    moves = [
        abs(math.log(b[i] / a[i])) * 10_000
        for a, b in itertools.pairwise(stable_mids)
        for i in range(2)
    ]
    assert max(moves) < 4
    # Volatile tokens: the fair price's moves are their volatility (bps per second)...
    for path, token in ((fair_sol, "WSOL"), (fair_bonk, "BONK")):
        per_second = statistics.stdev(b - a for a, b in itertools.pairwise(path)) * 10_000
        assert abs(per_second / MOTION[token].volatility_bps - 1) < 0.1, token
    # ...and the pools follow: SOL/USDC wanders tens of bps over the run.
    assert (max(sol_mids) / min(sol_mids) - 1) * 10_000 > 40


def test_fair_prices_return_to_the_reference_over_hours() -> None:
    fair, rng = FairPrices(), random.Random(5)
    seen: dict[str, list[float]] = {token: [] for token in MOTION}
    for _ in range(10_000):
        fair.advance(600.0, rng)  # ten minutes a step: the long run, quickly
        for token, path in seen.items():
            path.append(fair.usd(token))
    for token, path in seen.items():
        off = [math.log(usd / float(REFERENCE_USD[token])) * 10_000 for usd in path]
        assert abs(statistics.mean(off)) < MOTION[token].range_bps / 5, token
        assert abs(statistics.pstdev(off) / MOTION[token].range_bps - 1) < 0.15, token
        assert max(map(abs, off)) < 6 * MOTION[token].range_bps, token  # well inside the pools


# -- the venues compete ----------------------------------------------------------------


def test_both_venues_win_a_real_share_of_small_sol_usdc_orders() -> None:
    wins = {("SOL", "USDC"): [], ("USDC", "SOL"): []}
    for seed in (1, 2, 3):
        market = SimulatedMarket(REALISTIC, seed=seed)
        for _ in range(300):
            market.step()
            for (a, b), winners in wins.items():
                token_in, token_out = REGISTRY.resolve(a), REGISTRY.resolve(b)
                amount = usd_to_base(REGISTRY.pool_token(token_in).symbol, Decimal(100))
                outs = {
                    name: venue.best_quote(token_in, token_out, amount).amount_out
                    for name, venue in market.venues.items()
                }
                winners.append(max(outs, key=lambda name: outs[name]))
    for direction, winners in wins.items():
        for venue in ("Raydium", "Meteora"):
            assert winners.count(venue) >= 0.15 * len(winners), (direction, venue)
        # and which one it is changes often, not once in a while
        assert sum(a != b for a, b in itertools.pairwise(winners)) >= 30, direction


# -- running ---------------------------------------------------------------------------


async def test_start_runs_the_drift_task_and_stop_ends_it() -> None:
    def drifting() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "market-drift"]

    idle = SimulatedMarket(INSTANT)
    await idle.start()  # no background motion in the instant profile
    assert drifting() == []

    market = SimulatedMarket(REALISTIC)
    await market.start()
    await market.start()  # idempotent
    assert len(drifting()) == 1
    await market.stop()
    await market.stop()
    assert drifting() == []
    await idle.stop()  # its slot notices run even without motion
