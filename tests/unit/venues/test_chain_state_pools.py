"""Pools in the chain's state file: a commit carries a DLMM pool's header and only the bins
written since its last commit (its first one, everything), and a pool loaded from the file
is the pool that was committed, bin for bin, whatever the commits in between; a file
written when the pools row held the whole state, bins included, still loads."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from order_engine.venues import PROFILES, SimulatedMarket, market_state
from order_engine.venues.chain_state import ChainBatch, ChainState, PoolRow
from order_engine.venues.dlmm import DlmmPool
from order_engine.venues.pool import Pool, pool_from_state
from order_engine.venues.tokens import REGISTRY
from tests.unit.venues.test_pool_state import dlmm_pools, mutate

SOL = REGISTRY.resolve("SOL")
USDC = REGISTRY.resolve("USDC")
INSTANT = PROFILES["instant"]
SOL_USDC = "meteora:WSOL-USDC"


def commit(state: ChainState, pool: Pool) -> PoolRow:
    saved, whole = pool.take_unsaved()
    row = PoolRow(pool.pool_id, "Meteora", saved, whole)
    state.commit(ChainBatch(pools=[row]))
    return row


def loaded(state: ChainState, pool_id: str) -> Pool:
    return pool_from_state(state.load().pools[pool_id][1])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_pool_loaded_from_the_file_is_the_pool_committed_bin_for_bin(
    data: st.DataObject,
) -> None:
    """Swaps, each committed or not, restarts in between (the restored pool goes on), and a
    feed taking its own changes meanwhile: the file always loads the pool as it is."""
    pool = data.draw(dlmm_pools(), label="pool")
    with tempfile.TemporaryDirectory() as directory:
        state = ChainState(Path(directory) / "chain.db")
        state.open()
        try:
            assert commit(state, pool).whole  # its first commit: everything
            now = 0.0
            for _ in range(data.draw(st.integers(1, 25), label="swaps")):
                now += data.draw(st.sampled_from([0.0, 1.0, 31.0, 700.0]), label="dt")
                mutate(pool, data, now)
                if data.draw(st.booleans(), label="feed takes its changes"):
                    pool.take_changes()
                if data.draw(st.booleans(), label="committed"):
                    assert not commit(state, pool).whole
                if data.draw(st.booleans(), label="restart"):
                    commit(state, pool)  # a stop commits what moved since the last commit
                    state.close()
                    state = ChainState(state.path)
                    state.open()
                    restored = loaded(state, pool.pool_id)
                    assert restored.state() == pool.state()
                    restored.mark_saved()
                    pool = restored
            commit(state, pool)
            assert loaded(state, pool.pool_id).state() == pool.state()
        finally:
            state.close()


def test_a_commit_after_a_one_bin_swap_writes_only_that_bin(tmp_path: Path) -> None:
    path = tmp_path / "chain.db"
    state = ChainState(path)
    pool = DlmmPool("d", "X", "Y", bin_step=10, active_id=0, bins_each_side=150, y_per_bin=10**9)
    state.open()
    try:
        commit(state, pool)
        db = state.db
        assert db.execute("SELECT count(*) FROM bins").fetchone() == (301,)
        # Every bin row written from now on, by SQLite itself.
        db.execute("CREATE TEMP TABLE written (pool_id TEXT, bin_id INTEGER)")
        db.execute(
            "CREATE TEMP TRIGGER bin_written AFTER INSERT ON main.bins"
            " BEGIN INSERT INTO written VALUES (NEW.pool_id, NEW.bin_id); END"
        )
        before = {i: list(b) for i, b in pool.bins.items()}
        pool.swap("X", 1_000, 5.0)
        moved = [i for i, b in pool.bins.items() if b != before[i]]
        assert moved == [0]
        row = commit(state, pool)
        assert not row.whole and row.state["bins"] == [[0, *pool.bins[0]]]
        assert db.execute("SELECT pool_id, bin_id FROM written").fetchall() == [("d", 0)]
        assert db.execute("SELECT count(*) FROM bins").fetchone() == (301,)
        stored = orjson.loads(db.execute("SELECT state FROM pools").fetchone()[0])
        assert "bins" not in stored and stored["active_id"] == 0 and stored["fees_x"] == 1
        # A commit with nothing swapped since writes the header alone.
        db.execute("DELETE FROM written")
        commit(state, pool)
        assert db.execute("SELECT count(*) FROM written").fetchone() == (0,)
        assert loaded(state, "d").state() == pool.state()
    finally:
        state.close()


# -- through the market: its landings commit, a market built on the file again restores ----


@contextlib.contextmanager
def market_on(path: Path, seed: int = 3) -> Iterator[tuple[SimulatedMarket, ChainState]]:
    """A market on the state file at `path`, restored from it as `start` does (no tasks:
    the chain commits on `flush`), and what moved committed and the file closed after."""
    state = ChainState(path)
    market = SimulatedMarket(INSTANT, seed=seed, state=state)
    state.open()
    market_state.restore(market, state.load())
    try:
        yield market, state
    finally:
        market.chain.flush()
        state.close()


def land_swap(market: SimulatedMarket, token_in: Any, token_out: Any, amount: Decimal) -> None:
    """A swap through the SOL/USDC DLMM pool executed and committed as a landing is."""
    venue = market.venues["Meteora"]
    quote = venue.best_quote(token_in, token_out, token_in.to_base(amount))
    assert [hop.pool_id for hop in quote.hops] == [SOL_USDC]
    venue.execute(quote.hops, quote.amount_in, commit=True)
    market.chain.flush()


def all_pools(market: SimulatedMarket) -> dict[str, dict[str, Any]]:
    return {
        pool_id: pool.state()
        for venue in market.venues.values()
        for pool_id, pool in venue.pools.items()
    }


def test_a_market_restarted_after_many_swaps_has_its_dlmm_pool_bin_for_bin(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chain.db"
    with market_on(path) as (market, _):
        pool = market.venues["Meteora"].pools[SOL_USDC]
        assert isinstance(pool, DlmmPool)
        initial = {i: list(b) for i, b in pool.bins.items()}
        for i in range(60):  # up and down across many bins, each landing committed
            if i % 3 == 2:
                land_swap(market, USDC, SOL, Decimal(40_000 + 1_000 * i))
            else:
                land_swap(market, SOL, USDC, Decimal(150 + 5 * i))
            if i % 10 == 0:
                market.step()  # the feed takes its changes; the file must not miss any
        assert sum(b != initial[i] for i, b in pool.bins.items()) > 10
        expected = all_pools(market)
    with market_on(path) as (after, _):
        assert all_pools(after) == expected
        land_swap(after, SOL, USDC, Decimal(3))  # goes on from there, committed as a delta
        expected = all_pools(after)
    with market_on(path) as (again, _):
        assert all_pools(again) == expected


def test_a_file_whose_pools_rows_hold_whole_states_with_bins_still_loads(tmp_path: Path) -> None:
    """As files were written before bins had a table of their own: `pools` rows with the
    whole state, bins included, and no `bins` table."""
    path = tmp_path / "chain.db"
    with market_on(path) as (market, _):
        land_swap(market, SOL, USDC, Decimal(500))
        market.step()
        expected = all_pools(market)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DROP TABLE bins")
        rows = [(orjson.dumps(state).decode(), pool_id) for pool_id, state in expected.items()]
        db.executemany("UPDATE pools SET state = ? WHERE pool_id = ?", rows)
    finally:
        db.close()
    with market_on(path) as (old, state):
        assert all_pools(old) == expected
        # Moved out of the rows at open: a delta commit leaves no bin of the old row behind.
        states = [orjson.loads(s) for (s,) in state.db.execute("SELECT state FROM pools")]
        assert states and not any("bins" in s for s in states)
        land_swap(old, USDC, SOL, Decimal(70_000))
        expected = all_pools(old)
    with market_on(path) as (after, _):
        assert all_pools(after) == expected


def test_a_whole_state_applied_to_a_saved_pool_is_committed_whole() -> None:
    pool = DlmmPool("d", "X", "Y", bin_step=10, active_id=0, bins_each_side=5, y_per_bin=10**6)
    assert pool.take_unsaved() == (pool.state(), True)
    other = DlmmPool("d", "X", "Y", bin_step=10, active_id=2, bins_each_side=3, y_per_bin=10**5)
    pool.apply_state(other.state())
    assert pool.take_unsaved() == (other.state(), True)
    delta, whole = pool.take_unsaved()
    assert not whole and delta["bins"] == [] and delta["active_id"] == 2
