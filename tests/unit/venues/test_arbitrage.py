"""Arbitrageurs: they trade a pool only while it pays, and leave no trade that pays."""

from __future__ import annotations

import math
from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from order_engine.venues import arbitrage
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import DlmmPool, bin_id_for_price
from order_engine.venues.market_data import reference_price, usd_to_base
from order_engine.venues.pool import Pool

FAIR = reference_price("WSOL", "USDC")  # USDC base units per lamport
EDGE = 1e-6  # rounding: a marginal trade this much better than fair is not an opportunity
NOW = 100.0


def probe(token: str) -> int:
    return usd_to_base(token, Decimal(1))


def raydium(off_bps: float, fee_rate: int = 2_500) -> ConstantProductPool:
    """A $12M SOL/USDC constant-product pool priced `off_bps` from fair."""
    reserve_x = usd_to_base("WSOL", Decimal(6_000_000))
    price = FAIR * math.exp(off_bps / 10_000)
    return ConstantProductPool("r", "WSOL", "USDC", reserve_x, int(reserve_x * price), fee_rate)


def meteora(off_bps: float, bin_step: int = 10) -> DlmmPool:
    """An $8M SOL/USDC DLMM pool (fee = bin step) whose active bin is `off_bps` from fair."""
    return DlmmPool(
        "m",
        "WSOL",
        "USDC",
        bin_step=bin_step,
        active_id=bin_id_for_price(FAIR * math.exp(off_bps / 10_000), bin_step),
        bins_each_side=150,
        y_per_bin=usd_to_base("USDC", Decimal(8_000_000 / 301)),
    )


def rates(pool: Pool) -> tuple[float, float]:
    """What the next unit gets selling x and selling y, each against fair (1 = fair)."""
    sell_x = arbitrage.marginal_rate(pool, pool.token_x, NOW, probe)
    sell_y = arbitrage.marginal_rate(pool, pool.token_y, NOW, probe)
    assert sell_x is not None and sell_y is not None
    return sell_x / FAIR, sell_y * FAIR


def holdings(pool: Pool) -> tuple[int, int]:
    """Everything the pool holds of x and y, fees included: what traders paid in."""
    if isinstance(pool, ConstantProductPool):
        return pool.vault_x, pool.vault_y
    assert isinstance(pool, DlmmPool)
    return (
        sum(x for x, _ in pool.bins.values()) + pool.fees_x,
        sum(y for _, y in pool.bins.values()) + pool.fees_y,
    )


def arbitrageur_gain(before: tuple[int, int], after: tuple[int, int]) -> float:
    """What the arbitrageur made, valued at fair in y: the pool's loss."""
    return -((after[1] - before[1]) + (after[0] - before[0]) * FAIR)


# -- against the fair price ------------------------------------------------------------


def value(token: str, amount: int) -> float:
    return amount * FAIR if token == "WSOL" else float(amount)


def gain(pool: Pool, token_in: str, amount: int) -> float:
    """What selling `amount` of `token_in` into `pool` makes, valued at fair (y)."""
    fill = pool.quote(token_in, amount, NOW)
    token_out = pool.token_y if token_in == pool.token_x else pool.token_x
    return value(token_out, fill.amount_out) - value(token_in, amount)


def assert_the_best_size(original: Pool, before: tuple[int, int], after: tuple[int, int]) -> None:
    """The arbitrageur's trade made money, and trading less or more would have made less."""
    token_in, amount = (
        ("WSOL", after[0] - before[0]) if after[0] > before[0] else ("USDC", after[1] - before[1])
    )
    made = gain(original, token_in, amount)
    assert made > 0
    rounding = 2 * FAIR  # a base unit or two of either token
    assert made >= gain(original, token_in, int(amount * 0.95)) - rounding
    assert made >= gain(original, token_in, int(amount * 1.05)) - rounding


@settings(max_examples=200, deadline=None)
@given(off=st.floats(-400, 400), fee_rate=st.sampled_from([100, 2_500, 10_000]))
def test_align_trades_a_constant_product_pool_to_the_edge_of_its_fee_band(
    off: float, fee_rate: int
) -> None:
    band_bps = -math.log(1 - fee_rate / 1e6) * 10_000
    assume(abs(abs(off) - band_bps) > 0.01)  # on the edge, either answer is right
    pool, original = raydium(off, fee_rate), raydium(off, fee_rate)
    before = holdings(pool)

    traded = arbitrage.align(pool, FAIR, NOW, probe)

    sell_x, sell_y = rates(pool)
    assert sell_x <= 1 + EDGE and sell_y <= 1 + EDGE  # no trade against fair pays now
    assert traded == (abs(off) > band_bps)  # inside its band a pool is left alone
    if traded:
        assert_the_best_size(original, before, holdings(pool))


@settings(max_examples=200, deadline=None)
@given(off=st.floats(-400, 400), bin_step=st.sampled_from([1, 10, 25]))
def test_align_trades_a_dlmm_pool_to_the_last_bin_that_pays(off: float, bin_step: int) -> None:
    assume(abs(off) < 140 * bin_step)  # fair is within the pool's 150 bins each side
    pool, original = meteora(off, bin_step), meteora(off, bin_step)
    before = holdings(pool)

    traded = arbitrage.align(pool, FAIR, NOW, probe)

    sell_x, sell_y = rates(pool)
    assert sell_x <= 1 + EDGE and sell_y <= 1 + EDGE
    if traded:
        assert_the_best_size(original, before, holdings(pool))


def test_align_leaves_a_pool_inside_its_band_alone() -> None:
    for pool in (raydium(-20), raydium(20), meteora(0)):
        state = pool.state()
        assert not arbitrage.align(pool, FAIR, NOW, probe)
        assert pool.state() == state


# -- across venues ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(apart=st.floats(-300, 300), meteora_off=st.integers(-15, 15))
def test_cross_buys_where_cheap_and_sells_where_dear_until_it_no_longer_pays(
    apart: float, meteora_off: int
) -> None:
    m = meteora(meteora_off)
    r = raydium(meteora_off + apart)
    before = {pool.pool_id: holdings(pool) for pool in (r, m)}

    traded = arbitrage.cross([r, m], NOW, probe)

    r_x, r_y = rates(r)
    m_x, m_y = rates(m)
    # No round trip (sell on one venue, buy back on the other) pays any more.
    assert r_x * m_y <= 1 + EDGE and m_x * r_y <= 1 + EDGE
    after = {pool.pool_id: holdings(pool) for pool in (r, m)}
    moved_x = sum(after[p][0] - before[p][0] for p in after)
    moved_y = sum(after[p][1] - before[p][1] for p in after)
    assert moved_x == 0  # one transaction: the x bought on one venue is sold on the other
    if traded:
        assert {p.pool_id for p in traded} == {"r", "m"}
        assert moved_y < 0  # and the arbitrageur kept the difference
    else:
        assert moved_y == 0


def test_cross_does_nothing_while_the_spread_is_inside_both_fees() -> None:
    r, m = raydium(20), meteora(-10)  # 30 bps apart; 25 + 10 bps of fees
    states = r.state(), m.state()
    assert arbitrage.cross([r, m], NOW, probe) == []
    assert (r.state(), m.state()) == states


def test_cross_works_whatever_way_round_each_venue_lists_the_pair() -> None:
    flipped = ConstantProductPool(
        "f", "USDC", "WSOL", usd_to_base("USDC", Decimal(6_000_000)), 1, 2_500
    )
    flipped.vault_y = int(flipped.vault_x / (FAIR * math.exp(-0.02)))  # SOL 2 % cheaper here
    m = meteora(0)
    arbitrage.cross([m, flipped], NOW, probe)
    sol_in_m = arbitrage.marginal_rate(m, "WSOL", NOW, probe)
    usdc_in_f = arbitrage.marginal_rate(flipped, "USDC", NOW, probe)
    sol_in_f = arbitrage.marginal_rate(flipped, "WSOL", NOW, probe)
    usdc_in_m = arbitrage.marginal_rate(m, "USDC", NOW, probe)
    assert sol_in_m and usdc_in_f and sol_in_f and usdc_in_m
    assert sol_in_m * usdc_in_f <= 1 + EDGE
    assert sol_in_f * usdc_in_m <= 1 + EDGE
