"""The simulated chain: landing, slippage at landing, atomic legs, drops, idempotence."""

from __future__ import annotations

from decimal import Decimal

import base58
import pytest

from order_engine.venues import PROFILES, SimulatedChain, SimulatedMarket
from order_engine.venues.base import SLIPPAGE_EXCEEDED, TX_DROPPED, Quote, TxState
from order_engine.venues.chain_memory import UNSENT_REMEMBERED
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import DlmmPool
from order_engine.venues.tokens import REGISTRY

SOL = REGISTRY.resolve("SOL")
USDC = REGISTRY.resolve("USDC")
TEN_SOL = SOL.to_base(Decimal(10))


@pytest.fixture
def market() -> SimulatedMarket:
    return SimulatedMarket(PROFILES["instant"], seed=1)


def raydium_pool(market: SimulatedMarket) -> ConstantProductPool:
    pool = market.venues["Raydium"].pools["raydium:WSOL-USDC"]
    assert isinstance(pool, ConstantProductPool)
    return pool


def meteora_pool(market: SimulatedMarket) -> DlmmPool:
    pool = market.venues["Meteora"].pools["meteora:WSOL-USDC"]
    assert isinstance(pool, DlmmPool)
    return pool


def snapshot(market: SimulatedMarket) -> tuple[object, ...]:
    r, m = raydium_pool(market), meteora_pool(market)
    return (r.reserve_x, r.reserve_y, m.active_id, {i: list(b) for i, b in m.bins.items()})


def quote(market: SimulatedMarket, venue: str, amount: int = TEN_SOL) -> Quote:
    return market.venues[venue].best_quote(SOL, USDC, amount)


async def test_landing_moves_reserves_and_records_the_ledger(market: SimulatedMarket) -> None:
    chain = market.chain
    q = quote(market, "Raydium")
    pool = raydium_pool(market)
    x0, y0 = pool.vault_x, pool.vault_y
    tx = await chain.build([q], min_out=q.amount_out)
    assert (tx.wrap_sol, tx.unwrap_sol) == (True, False)

    assert await chain.submit(tx) == tx.signature
    status = await chain.wait(tx.signature, timeout=5)

    assert status.state is TxState.LANDED
    assert status.receipt is not None
    assert (status.receipt.amount_in, status.receipt.amount_out) == (TEN_SOL, q.amount_out)
    # The vaults take the whole input; the protocol's and fund's fee shares stay in them
    # but out of the pricing reserves.
    assert (pool.vault_x, pool.vault_y) == (x0 + TEN_SOL, y0 - q.amount_out)
    assert pool.reserve_x == x0 + TEN_SOL - pool.protocol_fees_x - pool.fund_fees_x
    [entry] = chain.ledger
    assert (entry.signature, entry.token_in, entry.token_out) == (tx.signature, "SOL", "USDC")
    assert (entry.amount_in, entry.amount_out) == (TEN_SOL, q.amount_out)
    assert entry.slot == status.receipt.slot == chain.slot
    assert [(leg.venue, leg.amount_in, leg.amount_out) for leg in entry.legs] == [
        ("Raydium", TEN_SOL, q.amount_out)
    ]
    assert await chain.status(tx.signature) == status


async def test_slippage_at_landing_fails_and_changes_nothing(market: SimulatedMarket) -> None:
    chain = market.chain
    q = quote(market, "Raydium")
    pool = raydium_pool(market)
    pool.swap("WSOL", SOL.to_base(Decimal(500)), market.now())  # someone sells first
    moved = (pool.reserve_x, pool.reserve_y)
    tx = await chain.build([q], min_out=q.amount_out)

    await chain.submit(tx)
    status = await chain.wait(tx.signature, timeout=5)

    assert status.state is TxState.FAILED
    assert status.error is not None
    assert status.error.code == SLIPPAGE_EXCEEDED
    assert status.error.transient
    assert (pool.reserve_x, pool.reserve_y) == moved
    assert chain.ledger == []


async def test_landing_within_slippage_pays_the_current_price(market: SimulatedMarket) -> None:
    chain = market.chain
    q = quote(market, "Raydium")
    pool = raydium_pool(market)
    pool.swap("WSOL", SOL.to_base(Decimal(5)), market.now())
    now_pays = pool.quote("WSOL", TEN_SOL).amount_out
    assert now_pays < q.amount_out
    tx = await chain.build([q], min_out=q.amount_out * 99 // 100)

    await chain.submit(tx)
    status = await chain.wait(tx.signature, timeout=5)

    assert status.state is TxState.LANDED
    assert status.receipt is not None
    assert status.receipt.amount_out == now_pays


async def test_split_transaction_lands_both_legs(market: SimulatedMarket) -> None:
    chain = market.chain
    ray, met = quote(market, "Raydium"), quote(market, "Meteora")
    before = snapshot(market)
    tx = await chain.build([ray, met], min_out=ray.amount_out + met.amount_out)

    await chain.submit(tx)
    status = await chain.wait(tx.signature, timeout=5)

    assert status.state is TxState.LANDED
    assert status.receipt is not None
    assert status.receipt.amount_in == 2 * TEN_SOL
    assert status.receipt.amount_out == ray.amount_out + met.amount_out
    assert [leg.venue for leg in status.receipt.legs] == ["Raydium", "Meteora"]
    after = snapshot(market)
    assert after[:2] != before[:2]  # Raydium moved
    assert after[3] != before[3]  # Meteora's bins moved


async def test_split_transaction_is_atomic_when_one_leg_slips(market: SimulatedMarket) -> None:
    chain = market.chain
    ray, met = quote(market, "Raydium"), quote(market, "Meteora")
    # Only Meteora's price falls: the Raydium leg alone would still pay its quote.
    meteora_pool(market).swap("WSOL", SOL.to_base(Decimal(300)), market.now())
    assert raydium_pool(market).quote("WSOL", TEN_SOL).amount_out == ray.amount_out
    before = snapshot(market)
    tx = await chain.build([ray, met], min_out=ray.amount_out + met.amount_out)

    await chain.submit(tx)
    status = await chain.wait(tx.signature, timeout=5)

    assert status.state is TxState.FAILED
    assert status.error is not None
    assert status.error.code == SLIPPAGE_EXCEEDED
    assert snapshot(market) == before  # neither leg executed
    assert chain.ledger == []


async def test_leg_the_pools_can_no_longer_fill_fails_the_transaction_even_without_minimum(
    market: SimulatedMarket,
) -> None:
    chain = market.chain
    ray = quote(market, "Raydium")
    met = quote(market, "Meteora", SOL.to_base(Decimal(20_000)))  # fills now...
    meteora_pool(market).swap("WSOL", SOL.to_base(Decimal(15_000)), market.now())
    before = snapshot(market)
    tx = await chain.build([ray, met], min_out=0)  # ...but no longer at landing

    await chain.submit(tx)
    status = await chain.wait(tx.signature, timeout=5)

    assert status.state is TxState.FAILED
    assert status.error is not None
    assert status.error.code == SLIPPAGE_EXCEEDED
    assert snapshot(market) == before  # the Raydium leg did not execute either
    assert chain.ledger == []


async def test_dropped_transaction_fails_and_never_lands(market: SimulatedMarket) -> None:
    chain = market.chain
    q = quote(market, "Raydium")
    before = snapshot(market)
    chain.drop_next(1)
    dropped = await chain.build([q], min_out=q.amount_out)
    landed = await chain.build([q], min_out=0)

    await chain.submit(dropped)
    await chain.submit(landed)
    status = await chain.wait(dropped.signature, timeout=5)

    assert status.state is TxState.FAILED
    assert status.error is not None
    assert status.error.code == TX_DROPPED
    assert chain.landed_count(dropped.signature) == 0
    # Only the next one was dropped.
    assert (await chain.wait(landed.signature, timeout=5)).state is TxState.LANDED
    assert [e.signature for e in chain.ledger] == [landed.signature]
    assert snapshot(market) != before


async def test_expired_blockhash_is_dropped(market: SimulatedMarket) -> None:
    chain = market.chain
    q = quote(market, "Raydium")
    tx = await chain.build([q], min_out=0)
    assert tx.last_valid_slot == chain.slot + market.profile.blockhash_validity_slots
    chain.slot = tx.last_valid_slot + 1

    await chain.submit(tx)
    status = await chain.wait(tx.signature, timeout=5)

    assert status.state is TxState.FAILED
    assert status.error is not None
    assert status.error.code == TX_DROPPED
    assert chain.ledger == []


async def test_submitting_the_same_transaction_twice_lands_it_once(
    market: SimulatedMarket,
) -> None:
    chain = market.chain
    q = quote(market, "Raydium")
    pool = raydium_pool(market)
    x0 = pool.vault_x
    tx = await chain.build([q], min_out=0)

    assert await chain.submit(tx) == tx.signature
    assert await chain.submit(tx) == tx.signature  # while pending
    assert (await chain.wait(tx.signature, timeout=5)).state is TxState.LANDED
    assert await chain.submit(tx) == tx.signature  # after landing
    assert (await chain.wait(tx.signature, timeout=5)).state is TxState.LANDED

    assert chain.landed_count(tx.signature) == 1
    assert len(chain.ledger) == 1
    assert pool.vault_x == x0 + TEN_SOL  # the vault, fee shares included: one landing


async def test_unknown_signature_is_unknown(market: SimulatedMarket) -> None:
    chain = market.chain
    signature = base58.b58encode(bytes(64)).decode()
    assert (await chain.status(signature)).state is TxState.UNKNOWN
    assert (await chain.wait(signature, timeout=5)).state is TxState.UNKNOWN
    # Built but never submitted: the chain has not seen it either.
    tx = await chain.build([quote(market, "Raydium")], min_out=0)
    assert (await chain.status(tx.signature)).state is TxState.UNKNOWN


async def test_hold_freezes_landing_until_release(market: SimulatedMarket) -> None:
    chain = market.chain
    q = quote(market, "Raydium")
    before = snapshot(market)
    chain.hold()
    tx = await chain.build([q], min_out=0)
    await chain.submit(tx)

    status = await chain.wait(tx.signature, timeout=0.05)  # times out: still held
    assert status.state is TxState.PENDING
    assert (await chain.status(tx.signature)).state is TxState.PENDING
    assert chain.ledger == []
    assert snapshot(market) == before

    chain.release()
    assert (await chain.status(tx.signature)).state is TxState.LANDED
    assert chain.landed_count(tx.signature) == 1


async def test_signatures_are_unique_64_byte_base58(market: SimulatedMarket) -> None:
    chain: SimulatedChain = market.chain
    q = quote(market, "Raydium")
    signatures = [(await chain.build([q], min_out=0)).signature for _ in range(200)]
    assert len(set(signatures)) == len(signatures)
    assert all(len(base58.b58decode(s)) == 64 for s in signatures)


async def test_build_needs_a_leg(market: SimulatedMarket) -> None:
    with pytest.raises(ValueError, match="at least one leg"):
        await market.chain.build([], min_out=0)


async def test_a_first_send_of_a_transaction_built_here_reads_nothing_from_the_state_file(
    market: SimulatedMarket,
) -> None:
    chain = market.chain
    lookups: list[str] = []
    chain._state.db.set_trace_callback(
        lambda sql: lookups.append(sql) if "FROM settled" in sql else None
    )
    tx = await chain.build([quote(market, "Raydium")], min_out=0)
    await chain.submit(tx)
    assert lookups == []
    assert (await chain.wait(tx.signature, timeout=5)).state is TxState.LANDED
    assert await chain.submit(tx) == tx.signature  # a resend: in memory, lands once
    assert chain.landed_count(tx.signature) == 1


async def test_a_transaction_built_long_before_it_is_sent_is_looked_up_and_lands_once(
    market: SimulatedMarket,
) -> None:
    chain = market.chain
    first = await chain.build([quote(market, "Raydium")], min_out=0)
    for _ in range(UNSENT_REMEMBERED):  # the chain forgets it was built here
        await chain.build([quote(market, "Meteora")], min_out=0)
    lookups: list[str] = []
    chain._state.db.set_trace_callback(
        lambda sql: lookups.append(sql) if "FROM settled" in sql else None
    )
    await chain.submit(first)
    assert len(lookups) == 1
    assert (await chain.wait(first.signature, timeout=5)).state is TxState.LANDED
    assert chain.landed_count(first.signature) == 1
