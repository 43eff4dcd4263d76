"""Meteora's DLMM pool: bins, bin crossing, dynamic fees, and invariants by property."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from order_engine.venues.dlmm import (
    FEE_DENOMINATOR,
    MAX_FEE_RATE,
    ONE_Q64,
    DlmmPool,
    bin_price_q64,
)
from order_engine.venues.pool import DustAmount, PoolExhausted


def pool(bins_each_side: int = 5, bin_step: int = 10, y_per_bin: int = 1_000_000) -> DlmmPool:
    # Active bin 0 trades at exactly 1.0 (price_q64(0) == 2^64), so the math below is exact.
    return DlmmPool(
        "d",
        "X",
        "Y",
        bin_step=bin_step,
        active_id=0,
        bins_each_side=bins_each_side,
        y_per_bin=y_per_bin,
    )


def totals(p: DlmmPool) -> tuple[int, int]:
    return sum(x for x, _ in p.bins.values()), sum(y for _, y in p.bins.values())


# -- bins and prices -------------------------------------------------------------------


def test_bin_price_is_one_plus_bin_step_to_the_power_of_the_id_in_q64() -> None:
    assert bin_price_q64(0, 10) == ONE_Q64
    assert bin_price_q64(1, 10) == ONE_Q64 * 10_010 // 10_000  # floored
    assert bin_price_q64(-1, 10) == ONE_Q64 * 10_000 // 10_010  # floored
    assert bin_price_q64(100, 25) / ONE_Q64 == pytest.approx(1.0025**100, rel=1e-12)


def test_initial_bins_hold_y_below_x_above_and_both_in_the_active_bin() -> None:
    p = pool()
    assert p.bins[-1] == [0, 1_000_000]
    assert p.bins[0] == [500_000, 500_000]
    assert p.bins[1] == [1_000_000 * 1000 // 1001, 0]  # 999_000 x worth 1_000_000 y
    assert p.spot_price() == 1.0


# -- swaps -----------------------------------------------------------------------------


def test_small_swap_stays_in_active_bin_with_zero_price_impact() -> None:
    p = pool()
    # base fee = 10_000 * 10 * 10 / 1e9 = 0.1 %: fee = ceil(1_000 * 0.001) = 1, net 999 at 1.0
    fill = p.swap("X", 1_000, now=0.0)
    assert (fill.amount_out, fill.fee) == (999, 1)
    assert fill.price_impact_bps == 0.0
    assert p.active_id == 0
    # The bin takes the 999 net of fee; the fee accrues apart, as on chain (the whole
    # 1_000 used to go into the bin: [501_000, 499_001]).
    assert p.bins[0] == [500_999, 499_001]
    assert (p.fees_x, p.fees_y) == (1, 0)


def test_small_buy_of_x_stays_in_active_bin_with_zero_price_impact() -> None:
    p = pool()
    fill = p.swap("Y", 1_000, now=0.0)
    assert (fill.amount_out, fill.fee) == (999, 1)
    assert fill.price_impact_bps == 0.0
    assert p.active_id == 0
    assert p.bins[0] == [499_001, 500_999]  # fee out of the bin, as above
    assert (p.fees_x, p.fees_y) == (0, 1)


def test_output_is_floored_at_the_bin_price() -> None:
    p = DlmmPool("d", "X", "Y", bin_step=10, active_id=1, bins_each_side=2, y_per_bin=10**6)
    # Bin 1 trades at 1.001: fee ceil(1_000 * 0.001) = 1, net 999,
    # selling x: floor(999 * 1.001) = floor(999.999) = 999 y
    # buying x:  floor(999 / 1.001) = floor(998.002) = 998 x
    assert p.quote("X", 1_000, now=0.0).amount_out == 999
    assert p.quote("Y", 1_000, now=0.0).amount_out == 998


def test_swap_larger_than_active_bin_crosses_bins_and_drains_them() -> None:
    p = pool()
    before = {i: list(b) for i, b in p.bins.items()}
    # Bin 0 holds 500_000 y (drain 500_000 x + 501 fee), bin -1 1_000_000 y (about
    # 1_001_000 x + fee): 2_000_000 x drains both and ends part way into bin -2.
    fill = p.swap("X", 2_000_000, now=0.0)
    assert p.active_id == -2
    assert p.bins[0][1] == 0
    assert p.bins[-1][1] == 0
    assert 0 < p.bins[-2][1] < 1_000_000
    assert fill.amount_out == 500_000 + 1_000_000 + (1_000_000 - p.bins[-2][1])
    for i in (-5, -4, -3, 1, 2, 3, 4, 5):
        assert p.bins[i] == before[i]
    assert fill.price_impact_bps > 0


def test_a_swap_that_drains_the_active_bin_exactly_leaves_it_active() -> None:
    # Bin 0 sells its 500_000 y for 500_000 x plus ceil(500_000 * 1e6 / (1e9 - 1e6)) = 501
    # fee: 500_501 in all. The swap loop moves on only while input remains, so the emptied
    # bin stays active (this pool used to move to bin -1 here).
    p = pool()
    fill = p.swap("X", 500_501, now=0.0)
    assert (fill.amount_out, fill.fee) == (500_000, 501)
    assert p.active_id == 0
    assert p.bins[0] == [1_000_000, 0]
    assert p.spot_price() == 1.0
    # The next sale of x finds nothing to buy in bin 0 and walks on to bin -1.
    assert p.quote("X", 1_000, now=0.0).price_impact_bps > 0
    p.swap("X", 1_000, now=0.0)
    assert p.active_id == -1


def test_input_beyond_the_bin_moves_on_even_if_only_its_fee_is_left() -> None:
    # One unit more than drains bin 0: the loop moves to bin -1, whose fee (ceil of
    # 1 * 1_004_000 / 1e9, the variable part for one bin of distance) takes the whole unit.
    p = pool()
    fill = p.swap("X", 500_502, now=0.0)
    assert (fill.amount_out, fill.fee) == (500_000, 502)
    assert p.active_id == -1
    assert p.bins[-1] == [0, 1_000_000]


def test_buying_x_moves_the_active_bin_up() -> None:
    p = pool()
    p.swap("Y", 2_000_000, now=0.0)
    assert p.active_id == 2
    assert p.bins[0][0] == 0
    assert p.bins[1][0] == 0
    assert 0 < p.bins[2][0] < 998_002


def test_quote_is_pure_and_equals_the_swap() -> None:
    p = pool()
    before = {i: list(b) for i, b in p.bins.items()}
    quoted = p.quote("X", 2_000_000, now=0.0)
    assert p.bins == before
    assert p.active_id == 0
    assert p.swap("X", 2_000_000, now=0.0) == quoted


def test_pool_exhausted_when_asking_for_more_than_all_bins() -> None:
    p = pool()
    y_total = 5 * 1_000_000 + 500_000
    with pytest.raises(PoolExhausted):
        p.quote("X", 2 * y_total, now=0.0)
    with pytest.raises(PoolExhausted):
        p.swap("Y", 10 * y_total, now=0.0)
    assert p.active_id == 0  # a failed swap changes nothing
    assert totals(p) == totals(pool())


def test_dust_amount_when_output_rounds_to_zero() -> None:
    with pytest.raises(DustAmount):
        pool().quote("X", 1, now=0.0)  # fee ceil(0.001) = 1, nothing left to trade


def test_rejects_unknown_token_and_non_positive_amount() -> None:
    with pytest.raises(ValueError, match="not in pool"):
        pool().quote("Z", 10, now=0.0)
    with pytest.raises(ValueError, match="positive"):
        pool().quote("X", 0, now=0.0)


# -- fees ------------------------------------------------------------------------------


def test_variable_fee_grows_with_distance_from_index_reference() -> None:
    p = pool()
    # base = 10_000 * 10 * 10 = 1_000_000 (0.1 %); variable = ceil((k * 10_000 * 10)^2
    # * 40_000 / 1e11) = 4_000 k^2, until the accumulator caps at 350_000 (k = 35).
    rates = [p.fee_rate(0, 0, k) for k in range(40)]
    assert rates[:36] == [1_000_000 + 4_000 * k * k for k in range(36)]
    assert all(a < b for a, b in itertools.pairwise(rates[:36]))
    assert rates[36:] == [rates[35]] * 4
    assert p.fee_rate(0, 0, -7) == p.fee_rate(0, 0, 7)  # distance, either direction
    assert p.fee_rate(50_000, 0, 0) == 1_000_000 + 4_000 * 25  # reference alone: k = 5


def test_fee_is_capped_at_ten_percent() -> None:
    p = pool(bin_step=100)
    # base 1 %, variable at the cap (350_000 * 100)^2 * 40_000 / 1e11 = 49 %: capped at 10 %
    assert p.fee_rate(0, 0, 0) == 10_000_000
    assert p.fee_rate(0, 0, 35) == MAX_FEE_RATE == 100_000_000
    assert p.fee_rate(0, 0, 3) == 10_000_000 + 3_600_000


@settings(max_examples=200, deadline=None)
@given(
    bin_step=st.integers(1, 500),
    base_factor=st.integers(0, 100_000),
    control=st.integers(0, 10**9),
    v_ref=st.integers(0, 10**7),
    distance=st.integers(-(10**4), 10**4),
)
def test_fee_rate_never_exceeds_ten_percent(
    bin_step: int, base_factor: int, control: int, v_ref: int, distance: int
) -> None:
    p = DlmmPool(
        "d",
        "X",
        "Y",
        bin_step=bin_step,
        active_id=0,
        bins_each_side=1,
        y_per_bin=1_000,
        base_factor=base_factor,
        variable_fee_control=control,
    )
    assert 0 <= p.fee_rate(v_ref, 0, distance) <= MAX_FEE_RATE


def test_crossing_bins_charges_the_variable_fee() -> None:
    p = pool()
    fill = p.quote("X", 2_000_000, now=0.0)
    base_only = -(-2_000_000 * 1_000_000 // 10**9)  # 2_000 at the base fee alone
    assert fill.fee > base_only


def test_volatility_decays_after_the_filter_period() -> None:
    p = pool(bins_each_side=20)
    p.swap("X", 10_200_000, now=0.0)  # moves the price 10 bins down
    assert p.active_id == -10
    assert p.volatility_accumulator == 100_000
    # Quotes of 100_000 x inside bin -10 (fees over 1e9):
    # before the filter period (30 s), reference (0, index 0): 1e6 + 4_000 * 10^2 -> fee 140
    # after it, reference decays to half the accumulator:     1e6 + 4_000 * 5^2  -> fee 110
    # after the decay period (600 s), reset:                   1e6                -> fee 100
    fees = {now: p.quote("X", 100_000, now) for now in (1.0, 29.0, 30.0, 599.0, 600.0)}
    assert [f.fee for f in fees.values()] == [140, 140, 110, 110, 100]
    outs = [f.amount_out for f in fees.values()]
    assert outs[0] == outs[1] < outs[2] == outs[3] < outs[4]


def test_volatility_builds_up_with_swaps_inside_the_filter_period() -> None:
    p = pool(bins_each_side=20)
    p.swap("X", 3_100_000, now=0.0)
    first = p.active_id
    p.swap("X", 3_100_000, now=5.0)
    # References kept from the first swap (index 0), so the accumulator counts both moves.
    assert p.volatility_accumulator == -p.active_id * 10_000
    assert p.active_id < first


# -- properties ------------------------------------------------------------------------


@st.composite
def pools(draw: st.DrawFn) -> DlmmPool:
    return DlmmPool(
        "d",
        "X",
        "Y",
        bin_step=draw(st.sampled_from([1, 10, 25, 100])),
        active_id=draw(st.integers(-300, 300)),
        bins_each_side=draw(st.integers(1, 12)),
        y_per_bin=draw(st.integers(1_000, 10**12)),
    )


sides = st.sampled_from(["X", "Y"])


def fill_all(p: DlmmPool, token_in: str) -> int:
    """About the input (fee excluded) that would drain every bin on the output side."""
    if token_in == "X":
        return sum(y * ONE_Q64 // p.price_q64(i) for i, (_, y) in p.bins.items())
    return sum(x * p.price_q64(i) // ONE_Q64 for i, (x, _) in p.bins.items())


@st.composite
def amounts(draw: st.DrawFn, p: DlmmPool, token_in: str) -> int:
    """From dust to a bit more than the pool holds, so swaps cross many bins."""
    whole = fill_all(p, token_in)
    return draw(
        st.one_of(
            st.integers(1, 10_000),
            st.floats(0, 1.1).map(lambda share: max(1, int(whole * share))),
        )
    )


def out_side_liquidity(p: DlmmPool, token_in: str) -> int:
    x, y = totals(p)
    return y if token_in == "X" else x


def out_or_zero(p: DlmmPool, token_in: str, amount: int, now: float) -> int | None:
    """Output of a quote; 0 for dust, None when the pool cannot fill it."""
    try:
        return p.quote(token_in, amount, now).amount_out
    except DustAmount:
        return 0
    except PoolExhausted:
        return None


@settings(max_examples=200, deadline=None)
@given(pools(), sides, st.data())
def test_output_never_exceeds_liquidity_and_fee_is_bounded(
    p: DlmmPool, side: str, data: st.DataObject
) -> None:
    amount = data.draw(amounts(p, side))
    try:
        fill = p.quote(side, amount, 0.0)
    except (DustAmount, PoolExhausted):
        assume(False)
        return
    assert 0 < fill.amount_out <= out_side_liquidity(p, side)
    assert 0 <= fill.fee <= amount


@settings(max_examples=200, deadline=None)
@given(pools(), sides, st.data())
def test_rounding_in_a_bin_favours_the_pool(p: DlmmPool, side: str, data: st.DataObject) -> None:
    active = p.active_id
    fill_in_bin = data.draw(st.integers(1, max(1, fill_all(p, side) // (2 * len(p.bins)))))
    try:
        fill = p.swap(side, fill_in_bin, 0.0)
    except DustAmount:
        assume(False)
        return
    assume(p.active_id == active)  # one bin, one price
    net, price = fill.amount_in - fill.fee, p.price_q64(active)
    if side == "X":
        assert fill.amount_out * ONE_Q64 <= net * price
    else:
        assert fill.amount_out * price <= net * ONE_Q64
    assert fill.fee * FEE_DENOMINATOR >= fill.amount_in * p.base_fee_rate  # fee rounds up


@settings(max_examples=200, deadline=None)
@given(pools(), sides, st.data())
def test_more_input_never_gives_less_output(p: DlmmPool, side: str, data: st.DataObject) -> None:
    small, large = sorted((data.draw(amounts(p, side)), data.draw(amounts(p, side))))
    out_large = out_or_zero(p, side, large, 0.0)
    assume(out_large is not None)
    out_small = out_or_zero(p, side, small, 0.0)
    assert out_small is not None  # the pool fills the larger amount, so the smaller too
    assert out_small <= out_large


@settings(max_examples=200, deadline=None)
@given(pools(), sides, st.floats(0, 1_000), st.data())
def test_round_trip_never_returns_more_than_was_put_in(
    p: DlmmPool, side: str, later: float, data: st.DataObject
) -> None:
    amount = data.draw(amounts(p, side))
    other = "Y" if side == "X" else "X"
    try:
        there = p.swap(side, amount, 0.0)
        back = p.swap(other, there.amount_out, later)
    except (DustAmount, PoolExhausted):
        assume(False)
        return
    assert back.amount_out <= amount


@settings(max_examples=100, deadline=None)
@given(pools(), st.lists(st.tuples(sides, st.floats(0, 200)), min_size=1, max_size=12), st.data())
def test_swaps_conserve_tokens_and_keep_the_bin_shape(
    p: DlmmPool, trades: list[tuple[str, float]], data: st.DataObject
) -> None:
    now = 0.0
    for side, dt in trades:
        now += dt
        amount = data.draw(amounts(p, side))
        x0, y0 = totals(p)
        fees0 = (p.fees_x, p.fees_y)
        try:
            fill = p.swap(side, amount, now)
        except (DustAmount, PoolExhausted):
            assert totals(p) == (x0, y0)  # a failed swap changes nothing
            assert (p.fees_x, p.fees_y) == fees0
            continue
        assert fill.fee >= 0
        # The input less its fee becomes liquidity; the fee accrues beside the bins.
        if side == "X":
            assert totals(p) == (x0 + fill.amount_in - fill.fee, y0 - fill.amount_out)
            assert (p.fees_x, p.fees_y) == (fees0[0] + fill.fee, fees0[1])
        else:
            assert totals(p) == (x0 - fill.amount_out, y0 + fill.amount_in - fill.fee)
            assert (p.fees_x, p.fees_y) == (fees0[0], fees0[1] + fill.fee)
        assert p.min_id <= p.active_id <= p.max_id
        for i, (x, y) in p.bins.items():
            assert x >= 0
            assert y >= 0
            if i < p.active_id:
                assert x == 0, (i, p.active_id)
            if i > p.active_id:
                assert y == 0, (i, p.active_id)
