"""Pools describe their state: a copy built from it and kept current with the changes each
mutation leaves quotes exactly as the pool does, errors included."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import ONE_Q64, DlmmPool
from order_engine.venues.pool import DustAmount, Fill, Pool, PoolExhausted, pool_from_state


def over_json(value: dict[str, Any]) -> dict[str, Any]:
    """What a subscriber at the other end of a WebSocket would get (no NaN, no infinity)."""
    decoded: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    return decoded


def outcome(pool: Pool, token_in: str, amount: int, now: float) -> Fill | type[Exception]:
    try:
        return pool.quote(token_in, amount, now)
    except (DustAmount, PoolExhausted) as exc:
        return type(exc)


def liquidity_in(pool: Pool, token_in: str) -> int:
    """About the input that would buy everything the pool holds of the other token."""
    if isinstance(pool, ConstantProductPool):
        return pool.reserve_x if token_in == "X" else pool.reserve_y
    assert isinstance(pool, DlmmPool)
    if token_in == "X":
        return sum(y * ONE_Q64 // pool.price_q64(i) for i, (_, y) in pool.bins.items())
    return sum(x * pool.price_q64(i) // ONE_Q64 for i, (x, _) in pool.bins.items())


@st.composite
def amounts(draw: st.DrawFn, pool: Pool, token_in: str) -> int:
    """From dust to more than the pool can fill."""
    whole = liquidity_in(pool, token_in)
    return draw(
        st.one_of(
            st.integers(1, 10_000),
            st.floats(0, 1.3).map(lambda share: max(1, int(whole * share))),
        )
    )


@st.composite
def cpmm_pools(draw: st.DrawFn) -> Pool:
    return ConstantProductPool(
        "raydium:X-Y",
        "X",
        "Y",
        draw(st.integers(1_000, 10**15)),
        draw(st.integers(1_000, 10**15)),
        draw(st.sampled_from([0, 100, 2_500, 10_000])),
    )


@st.composite
def dlmm_pools(draw: st.DrawFn) -> Pool:
    return DlmmPool(
        "meteora:X-Y",
        "X",
        "Y",
        bin_step=draw(st.sampled_from([1, 10, 25, 100])),
        active_id=draw(st.integers(-300, 300)),
        bins_each_side=draw(st.integers(1, 12)),
        y_per_bin=draw(st.integers(1_000, 10**12)),
    )


def mutate(pool: Pool, data: st.DataObject, now: float) -> None:
    """One thing that happens to a pool on chain: a trader's swap or an arbitrageur's."""
    if data.draw(st.booleans(), label="swap"):
        side = data.draw(st.sampled_from(["X", "Y"]), label="side")
        amount = data.draw(amounts(pool, side), label="amount")
        with contextlib.suppress(DustAmount, PoolExhausted):  # a failed swap changes nothing
            pool.swap(side, amount, now)
    else:
        factor = data.draw(st.floats(0.8, 1.25), label="price factor")
        pool.trade_towards(pool.spot_price() * factor, now)


def assert_copy_quotes_as_the_pool(pool: Pool, copy: Pool, data: st.DataObject, now: float) -> None:
    for _ in range(3):
        side = data.draw(st.sampled_from(["X", "Y"]), label="quote side")
        amount = data.draw(amounts(pool, side), label="quote amount")
        later = now + data.draw(st.sampled_from([0.0, 1.0, 29.0, 30.0, 599.0, 700.0]))
        assert outcome(copy, side, amount, later) == outcome(pool, side, amount, later)


@pytest.mark.parametrize("pools", [cpmm_pools(), dlmm_pools()], ids=["cpmm", "dlmm"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_copy_kept_current_with_the_changes_quotes_exactly_as_the_pool(
    pools: st.SearchStrategy[Pool], data: st.DataObject
) -> None:
    pool = data.draw(pools, label="pool")
    copy = pool_from_state(over_json(pool.state()))
    assert type(copy) is type(pool)
    now = 0.0
    for _ in range(data.draw(st.integers(1, 12), label="mutations")):
        now += data.draw(st.sampled_from([0.0, 0.5, 5.0, 31.0, 400.0, 900.0]), label="dt")
        mutate(pool, data, now)
        changes = pool.take_changes()
        if changes is not None:
            copy.apply_state(over_json(changes))
        assert over_json(copy.state()) == over_json(pool.state())
        assert_copy_quotes_as_the_pool(pool, copy, data, now)


def test_a_pool_that_never_swapped_encodes_its_last_update_for_json() -> None:
    pool = DlmmPool("d", "X", "Y", bin_step=10, active_id=0, bins_each_side=2, y_per_bin=10**6)
    assert pool.last_update == -math.inf
    state = over_json(pool.state())  # allow_nan=False: raises on an infinity
    copy = pool_from_state(state)
    assert isinstance(copy, DlmmPool)
    assert copy.last_update == -math.inf


def test_nothing_changed_after_quotes_failed_swaps_and_nudges_that_do_not_trade() -> None:
    cp = ConstantProductPool("c", "X", "Y", 10**9, 2 * 10**9)
    dl = DlmmPool("d", "X", "Y", bin_step=10, active_id=0, bins_each_side=2, y_per_bin=10**6)
    for pool in (cp, dl):
        pool.quote("X", 10_000, 0.0)
        with pytest.raises(DustAmount):
            pool.swap("X", 1, 0.0)
        pool.trade_towards(pool.spot_price(), 0.0)
        assert pool.take_changes() is None
    with pytest.raises(PoolExhausted):
        dl.swap("X", 10**9, 0.0)
    assert dl.take_changes() is None


def test_changes_are_taken_once() -> None:
    pool = DlmmPool("d", "X", "Y", bin_step=10, active_id=0, bins_each_side=2, y_per_bin=10**6)
    pool.swap("X", 1_000, 0.0)
    assert pool.take_changes() is not None
    assert pool.take_changes() is None


def test_a_dlmm_delta_lists_only_the_bins_the_swap_touched() -> None:
    pool = DlmmPool("d", "X", "Y", bin_step=10, active_id=0, bins_each_side=50, y_per_bin=10**6)
    pool.swap("X", 1_000, 5.0)  # inside the active bin
    delta = pool.take_changes()
    assert delta is not None
    assert delta["bins"] == [[0, 500_999, 499_001]]
    assert "kind" not in delta  # a delta, not a whole state
    assert (delta["active_id"], delta["last_update"], delta["fees_x"]) == (0, 5.0, 1)
    pool.swap("X", 1_600_000, 6.0)  # drains bin 0 and part of bin -1, then -2
    delta = pool.take_changes()
    assert delta is not None
    assert [b[0] for b in delta["bins"]] == [-2, -1, 0]


def test_the_cpmm_change_is_its_whole_state() -> None:
    pool = ConstantProductPool("c", "X", "Y", 10**9, 2 * 10**9)
    pool.swap("Y", 10**6)
    assert pool.take_changes() == pool.state()


def test_a_state_applies_only_to_its_own_pool_and_kind() -> None:
    a = ConstantProductPool("a", "X", "Y", 10**9, 10**9)
    b = ConstantProductPool("b", "X", "Y", 10**9, 10**9)
    d = DlmmPool("a", "X", "Y", bin_step=10, active_id=0, bins_each_side=2, y_per_bin=10**6)
    with pytest.raises(ValueError, match="does not apply"):
        a.apply_state(b.state())
    with pytest.raises(ValueError, match="does not apply"):
        d.apply_state(a.state())
    with pytest.raises(ValueError, match="no pool of kind"):
        pool_from_state({"kind": "orderbook"})
