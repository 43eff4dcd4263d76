"""The simulated chain's state file: a chain built on it again is the chain that stopped
(pools, ledger, statuses, launched tokens, slots), lands the transactions it had received
while their blockhash is valid and never those that expired; and it keeps in memory only
the statuses of recent slots, and at most so many."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.base import TX_DROPPED, TransientVenueError, Tx, TxState
from order_engine.venues.chain_state import ChainState
from order_engine.venues.tokens import REGISTRY

SOL = REGISTRY.resolve("SOL")
USDC = REGISTRY.resolve("USDC")
INSTANT = PROFILES["instant"]


@asynccontextmanager
async def market_on(path: Path, seed: int = 3) -> AsyncIterator[SimulatedMarket]:
    """A started market on the state file at `path`, stopped and its file closed after."""
    state = ChainState(path)
    market = SimulatedMarket(INSTANT, seed=seed, state=state)
    await market.start()
    try:
        yield market
    finally:
        await market.stop()
        state.close()


def pools(market: SimulatedMarket) -> dict[str, dict[str, Any]]:
    return {
        pool_id: pool.state()
        for venue in market.venues.values()
        for pool_id, pool in venue.pools.items()
    }


async def sent(market: SimulatedMarket, sol: str = "2", venue: str = "Raydium") -> Tx:
    quote = market.venues[venue].best_quote(SOL, USDC, SOL.to_base(Decimal(sol)))
    tx = await market.chain.build([quote], min_out=quote.amount_out * 9 // 10)
    await market.chain.submit(tx)
    return tx


async def landed(market: SimulatedMarket) -> Tx:
    tx = await sent(market)
    assert (await market.chain.wait(tx.signature, 5)).state is TxState.LANDED
    return tx


async def test_a_chain_reloaded_from_its_file_is_the_chain_that_stopped(tmp_path: Path) -> None:
    path = tmp_path / "chain.db"
    async with market_on(path) as before:
        signatures = [(await landed(before)).signature for _ in range(3)]
        await landed_on(before, "Meteora")
        before.step(5)  # the market moves on: other traders, arbitrage
        before.launch("ZAPP", "Meteora")
        statuses = {s: await before.chain.status(s) for s in signatures}
        ledger, state, slot = before.chain.ledger, pools(before), before.chain.current_slot()
        clock = before.now()
    async with market_on(path) as after:
        assert pools(after) == state
        assert after.chain.ledger == ledger
        assert {s: await after.chain.status(s) for s in signatures} == statuses
        assert after.chain.current_slot() >= slot
        assert after.now() == clock
        assert "meteora:ZAPP-WSOL" in after.venues["Meteora"].pools
        # A restored launch is a launch: the token trades, and cannot launch again.
        assert after.venues["Meteora"].best_quote(SOL, REGISTRY.resolve("ZAPP"), 10**9)


async def landed_on(market: SimulatedMarket, venue: str) -> None:
    tx = await sent(market, "1", venue)
    assert (await market.chain.wait(tx.signature, 5)).state is TxState.LANDED


async def test_a_transaction_received_before_a_restart_lands_after_it(tmp_path: Path) -> None:
    path = tmp_path / "chain.db"
    async with market_on(path) as before:
        before.chain.hold()  # received, recorded, never landed in this process
        tx = await sent(before)
        untouched = pools(before)
    async with market_on(path) as after:
        status = await after.chain.wait(tx.signature, 5)
        assert status.state is TxState.LANDED, status
        assert [entry.signature for entry in after.chain.ledger] == [tx.signature]
        assert pools(after) != untouched
        # A resend of the same signed transaction lands nothing more.
        await after.chain.submit(tx)
        assert after.chain.landed_count(tx.signature) == 1


async def test_a_transaction_whose_blockhash_expired_meanwhile_never_lands(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chain.db"
    async with market_on(path) as before:
        before.chain.hold()
        tx = await sent(before)
        untouched = pools(before)
        # The chain's slots pass the blockhash's last valid one before it comes back.
        before.chain.slot = tx.last_valid_slot + 1
    async with market_on(path) as after:
        status = await after.chain.wait(tx.signature, 5)
        assert status.state is TxState.FAILED and status.error is not None
        assert status.error.code == TX_DROPPED
        assert after.chain.ledger == []
        assert pools(after) == untouched


async def test_only_recent_statuses_stay_in_memory(tmp_path: Path) -> None:
    slots_apart = 40
    async with market_on(tmp_path / "chain.db") as market:
        chain = market.chain
        window = chain.keep_slots // slots_apart + 2
        first = await landed(market)
        for _ in range(10 * window):
            chain.slot += slots_apart  # one order every 40 slots (16 s)
            await landed(market)
            assert chain.remembered <= window
        # Forgotten by memory, not by the chain: read from its file.
        assert (await chain.status(first.signature)).state is TxState.LANDED
        assert len(chain.ledger) == 10 * window + 1
        # And a resend of it, long expired, is not dropped over its landing.
        await chain.submit(first)
        assert (await chain.wait(first.signature, 1)).state is TxState.LANDED


async def test_at_most_max_remembered_statuses_stay_in_memory(tmp_path: Path) -> None:
    async with market_on(tmp_path / "chain.db") as market:
        chain = market.chain
        chain.max_remembered = 20
        txs = [await landed(market) for _ in range(100)]  # all within the blockhash window
        assert chain.remembered == 20
        assert len(chain.ledger) == 100
        for tx in txs[:10]:  # forgotten by memory: a resend is still known, lands nothing
            await chain.submit(tx)
            assert (await chain.status(tx.signature)).state is TxState.LANDED
            assert chain.landed_count(tx.signature) == 1
        assert chain.remembered == 20


async def test_a_landing_is_committed_before_anyone_can_see_it(tmp_path: Path) -> None:
    """Not by a status query, not on the account stream: at its commit the transaction is
    still pending and the feed has published nothing of the pools it moved."""
    async with market_on(tmp_path / "chain.db") as market:
        chain = market.chain
        seen: list[tuple[TxState, int]] = []
        commit: Callable[..., None] = chain._state.commit
        published = market.feed.last_seq

        def observed(batch: Any) -> None:
            for settled in batch.settled:
                seen.append((chain._known(settled.signature).state, market.feed.last_seq))
            commit(batch)

        chain._state.commit = observed  # type: ignore[method-assign]
        await landed(market)
        assert seen == [(TxState.PENDING, published)]
        assert market.feed.last_seq > published  # published once committed


async def test_a_send_the_chain_cannot_record_is_refused_not_left_waiting(tmp_path: Path) -> None:
    """Whatever fails the chain's commit, not only an error of SQLite's (here the market's
    state cannot be read), the sender hears of it instead of waiting forever."""

    def unreadable() -> Any:
        raise ValueError("a market state that cannot be written")

    async with market_on(tmp_path / "chain.db") as market:
        market.chain.state_source = unreadable
        with pytest.raises(TransientVenueError, match="could not record"):
            async with asyncio.timeout(5):
                await sent(market)


async def test_a_stopped_market_lands_nothing_and_hands_its_file_over(tmp_path: Path) -> None:
    """A transaction on its way when the market stops lands once, by whoever opens the file
    next (here a market in the same process), never by the stopped one's timers as well."""
    path = tmp_path / "chain.db"
    slow = dataclasses.replace(INSTANT, land_latency_ms=(50.0, 50.0))
    first_state = ChainState(path)
    first = SimulatedMarket(slow, seed=3, state=first_state)
    await first.start()
    tx = await sent(first)
    await first.stop()  # the transaction is still on its way
    state = ChainState(path)
    second = SimulatedMarket(slow, seed=3, state=state)
    await second.start()  # would fail if the stopped market still held the file
    try:
        assert (await second.chain.wait(tx.signature, 5)).state is TxState.LANDED
        # The stopped market's timer was due before the second's: it has had its chance,
        # and landed nothing.
        assert (await first.chain.status(tx.signature)).state is TxState.PENDING
        assert second.chain.landed_count(tx.signature) == 1
        assert [e.signature for e in second.chain.ledger].count(tx.signature) == 1
    finally:
        await second.stop()
        state.close()
        first_state.close()


def test_the_state_file_is_checkpointed_on_a_thread_not_in_the_chains_commits(
    tmp_path: Path,
) -> None:
    """The chain commits on the event loop: a checkpoint in a commit would stall it."""
    before = _checkpoint_threads()
    state = ChainState(tmp_path / "chain.db")
    state.open()
    try:
        assert state.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        assert _checkpoint_threads() - before == {f"wal-checkpoint {tmp_path / 'chain.db'}"}
    finally:
        state.close()
    assert _checkpoint_threads() == before


def test_a_chain_in_memory_has_no_checkpoints_to_make() -> None:
    before = _checkpoint_threads()
    state = ChainState()
    try:
        assert _checkpoint_threads() == before
    finally:
        state.close()


def _checkpoint_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("wal-checkpoint")}
