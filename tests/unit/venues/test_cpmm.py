"""Raydium's constant-product pool: exact integer math, and the invariants that must hold."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from order_engine.venues.cpmm import ConstantProductPool, cp_amount_out, fee_shares
from order_engine.venues.pool import DustAmount


def pool(x: int = 1_000_000, y: int = 2_000_000, fee_rate: int = 2_500) -> ConstantProductPool:
    return ConstantProductPool("p", "X", "Y", x, y, fee_rate)


# -- hand-computed cases ---------------------------------------------------------------


def test_quote_x_for_y_matches_hand_computation() -> None:
    # fee = ceil(10_000 * 2_500 / 1e6) = 25, in' = 9_975,
    # out = floor(2_000_000 * 9_975 / (1_000_000 + 9_975)) = floor(19_950_000_000 / 1_009_975)
    #     = floor(19_752.96...) = 19_752
    fill = pool().quote("X", 10_000)
    assert (fill.amount_in, fill.fee, fill.amount_out) == (10_000, 25, 19_752)
    assert fill.spot_price == 2.0


def test_quote_y_for_x_matches_hand_computation() -> None:
    # fee = 25, in' = 9_975, out = floor(1_000_000 * 9_975 / 2_009_975) = floor(4_962.74...)
    fill = pool().quote("Y", 10_000)
    assert (fill.amount_in, fill.fee, fill.amount_out) == (10_000, 25, 4_962)
    assert fill.spot_price == 0.5


def test_price_impact_matches_hand_computation() -> None:
    # execution 19_752 / 9_975 against spot 2: 1 - 19_752 / 19_950 = 198 / 19_950 -> 99.248 bps
    assert pool().quote("X", 10_000).price_impact_bps == pytest.approx(198 / 19_950 * 10_000)


@pytest.mark.parametrize(
    ("amount_in", "fee"),
    [
        (400, 1),  # 400 * 0.0025 = 1 exactly
        (401, 2),  # 1.0025 rounds up
        (2, 1),  # 0.005 rounds up
    ],
)
def test_fee_rounds_up(amount_in: int, fee: int) -> None:
    assert cp_amount_out(1_000_000, 2_000_000, amount_in, 2_500)[1] == fee


def test_one_base_unit_pays_one_unit_of_fee_and_buys_nothing() -> None:
    # fee = ceil(0.0025) = 1, in' = 0, out = 0
    assert cp_amount_out(1_000_000, 2_000_000, 1, 2_500) == (0, 1)
    with pytest.raises(DustAmount):
        pool().quote("X", 1)
    with pytest.raises(DustAmount):
        pool().swap("X", 1)


def test_swap_keeps_the_protocol_and_fund_shares_of_the_fee_out_of_the_reserves() -> None:
    # Standard AmmConfig: of the 25 fee, protocol floor(25 * 120_000 / 1e6) = 3 and fund
    # floor(25 * 40_000 / 1e6) = 1 stay in the vault but not in the pricing reserves (the
    # whole input used to count as reserve: x was 1_010_000, k 2_000_050_480_000).
    p = pool()
    fill = p.swap("X", 10_000)
    assert fill.amount_out == 19_752
    assert (p.vault_x, p.vault_y) == (1_010_000, 2_000_000 - 19_752)
    assert (p.protocol_fees_x, p.fund_fees_x, p.protocol_fees_y, p.fund_fees_y) == (3, 1, 0, 0)
    assert (p.reserve_x, p.reserve_y) == (1_009_996, 1_980_248)
    # k: 2e12 -> 1_009_996 * 1_980_248 = 2_000_042_559_008
    assert p.k == 2_000_042_559_008


def test_the_next_swap_is_priced_against_the_reserves_without_accrued_fees() -> None:
    p = pool()
    p.swap("X", 10_000)
    # in' = 9_975, out = floor(1_980_248 * 9_975 / (1_009_996 + 9_975)) = floor(19_366.4...)
    assert p.quote("X", 10_000).amount_out == 1_980_248 * 9_975 // 1_019_971 == 19_366


@pytest.mark.parametrize(
    ("trade_fee", "shares"),
    [
        (25, (3, 1)),  # 3.0 and 1.0 exactly
        (9, (1, 0)),  # 1.08 and 0.36, floored
        (1, (0, 0)),
        (30_000, (3_600, 1_200)),
    ],
)
def test_fee_shares_are_floored(trade_fee: int, shares: tuple[int, int]) -> None:
    assert fee_shares(trade_fee, 120_000, 40_000) == shares


def test_quote_does_not_change_the_pool() -> None:
    p = pool()
    p.quote("X", 10_000)
    p.quote("Y", 10_000)
    assert (p.reserve_x, p.reserve_y) == (1_000_000, 2_000_000)


def test_spot_price_is_y_over_x() -> None:
    assert pool(4_000, 1_000).spot_price() == 0.25


@pytest.mark.parametrize("target", [1.5, 1.99, 2.01, 3.0])
def test_trade_towards_moves_spot_price_to_target(target: float) -> None:
    p = pool(10**12, 2 * 10**12)
    k = p.k
    p.trade_towards(target)
    assert p.spot_price() == pytest.approx(target, rel=1e-3)
    assert p.k >= k


def test_rejects_unknown_token_non_positive_amount_and_empty_reserves() -> None:
    with pytest.raises(ValueError, match="not in pool"):
        pool().quote("Z", 10)
    with pytest.raises(ValueError, match="positive"):
        pool().quote("X", 0)
    with pytest.raises(ValueError, match="positive"):
        pool(0, 1)


# -- properties ------------------------------------------------------------------------

reserves = st.integers(min_value=1_000, max_value=10**15)
amounts = st.integers(min_value=1, max_value=10**16)
fee_rates = st.sampled_from([0, 100, 2_500, 10_000, 30_000])
sides = st.sampled_from(["X", "Y"])


@settings(max_examples=300, deadline=None)
@given(reserves, reserves, amounts, fee_rates)
def test_output_is_below_out_reserve_and_fee_is_bounded(
    r_in: int, r_out: int, amount: int, fee_rate: int
) -> None:
    out, fee = cp_amount_out(r_in, r_out, amount, fee_rate)
    assert 0 <= out < r_out
    assert 0 <= fee <= amount


@settings(max_examples=300, deadline=None)
@given(reserves, reserves, amounts, amounts, fee_rates)
def test_more_input_never_gives_less_output(
    r_in: int, r_out: int, a: int, b: int, fee_rate: int
) -> None:
    small, large = sorted((a, b))
    assert (
        cp_amount_out(r_in, r_out, small, fee_rate)[0]
        <= (cp_amount_out(r_in, r_out, large, fee_rate)[0])
    )


@settings(max_examples=300, deadline=None)
@given(reserves, reserves, amounts, fee_rates, sides)
def test_k_never_decreases_after_a_swap(
    x: int, y: int, amount: int, fee_rate: int, side: str
) -> None:
    p = pool(x, y, fee_rate)
    k = p.k
    try:
        fill = p.swap(side, amount)
    except DustAmount:
        assert (p.reserve_x, p.reserve_y) == (x, y)
        return
    assert fill.fee >= 0
    assert p.reserve_x > 0
    assert p.reserve_y > 0
    assert p.k >= k
    # What left the reserves is the protocol's and fund's share of this one fee.
    accrued = p.protocol_fees_x + p.fund_fees_x + p.protocol_fees_y + p.fund_fees_y
    assert accrued == sum(fee_shares(fill.fee, p.protocol_fee_rate, p.fund_fee_rate))
    assert (p.vault_x - p.reserve_x) + (p.vault_y - p.reserve_y) == accrued <= fill.fee


@settings(max_examples=300, deadline=None)
@given(reserves, reserves, amounts, fee_rates, sides)
def test_round_trip_never_returns_more_than_was_put_in(
    x: int, y: int, amount: int, fee_rate: int, side: str
) -> None:
    p = pool(x, y, fee_rate)
    other = "Y" if side == "X" else "X"
    try:
        there = p.swap(side, amount)
        back = p.swap(other, there.amount_out)
    except DustAmount:
        assume(False)
        return
    assert back.amount_out <= amount


@settings(max_examples=200, deadline=None)
@given(reserves, reserves, amounts, fee_rates, sides)
def test_quote_equals_the_swap_it_prices(
    x: int, y: int, amount: int, fee_rate: int, side: str
) -> None:
    p = pool(x, y, fee_rate)
    try:
        quoted = p.quote(side, amount)
    except DustAmount:
        assume(False)
        return
    assert p.swap(side, amount) == quoted
