"""The account feed: a snapshot then every pool change in order, resumable with no gap, bounded
for slow subscribers, and enough to keep an exact copy of every pool."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from decimal import Decimal
from typing import Any

import pytest

from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.base import TxState
from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.feed import (
    AccountFeed,
    AccountUpdate,
    FeedClosed,
    FeedLagged,
    FeedMessage,
    FeedSubscription,
    SlotNotice,
    Snapshot,
)
from order_engine.venues.market_data import PoolSpec
from order_engine.venues.pool import DustAmount, Fill, Pool, PoolExhausted, pool_from_state
from order_engine.venues.tokens import REGISTRY
from tests.support.market import land_swap

WAIT = 5.0  # seconds: a bound on waiting for what must come, never a pause


@pytest.fixture
def market() -> SimulatedMarket:
    return SimulatedMarket(PROFILES["instant"], seed=1)


def small_feed(history: int = 10_000) -> tuple[AccountFeed, ConstantProductPool]:
    pool = ConstantProductPool("raydium:X-Y", "X", "Y", 10**9, 2 * 10**9)
    feed = AccountFeed(lambda: 0.0, lambda: 7, history=history)
    feed.follow("Raydium", pool)
    return feed, pool


async def take(sub: FeedSubscription, count: int) -> list[FeedMessage]:
    async with asyncio.timeout(WAIT):
        return [await sub.next() for _ in range(count)]


def seqs(messages: list[FeedMessage]) -> list[int]:
    return [m.seq for m in messages]


def over_json(state: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(json.dumps(state, allow_nan=False))
    return decoded


class Mirror:
    """What a subscriber keeps: every pool, rebuilt from the snapshot and the updates."""

    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {}
        self.seq = -1
        self.market_time = 0.0

    def apply(self, message: FeedMessage) -> None:
        if isinstance(message, Snapshot):
            self.pools = {p.pool_id: pool_from_state(over_json(p.state)) for p in message.pools}
        else:
            assert message.seq == self.seq + 1, "a gap in the stream"
            if isinstance(message, AccountUpdate):
                known = self.pools.get(message.pool_id)
                if known is None:
                    self.pools[message.pool_id] = pool_from_state(over_json(message.state))
                else:
                    known.apply_state(over_json(message.state))
        self.seq = message.seq
        self.market_time = message.market_time

    async def catch_up(self, sub: FeedSubscription, feed: AccountFeed) -> None:
        async with asyncio.timeout(WAIT):
            while self.seq < feed.last_seq:
                self.apply(await sub.next())


def outcome(pool: Pool, token_in: str, amount: int, now: float) -> Fill | type[Exception]:
    try:
        return pool.quote(token_in, amount, now)
    except (DustAmount, PoolExhausted) as exc:
        return type(exc)


def market_pools(market: SimulatedMarket) -> dict[str, Pool]:
    return {p.pool_id: p for v in market.venues.values() for p in v.pools.values()}


# -- order and content -----------------------------------------------------------------


async def test_a_subscriber_gets_a_snapshot_then_every_update_in_order(
    market: SimulatedMarket,
) -> None:
    feed = market.feed
    with feed.subscribe() as sub:
        [first] = await take(sub, 1)
        assert isinstance(first, Snapshot)
        assert (first.stream_id, first.seq) == (feed.stream_id, feed.last_seq)
        assert {p.pool_id for p in first.pools} == set(market_pools(market))
        assert {p.venue for p in first.pools} == {"Raydium", "Meteora"}

        market.step(3)
        messages = await take(sub, feed.last_seq - first.seq)
    assert seqs(messages) == list(range(first.seq + 1, feed.last_seq + 1))
    assert all(isinstance(m, AccountUpdate) for m in messages)
    # Each tick's updates carry that tick's clock, which only moves forward.
    times = [m.market_time for m in messages]
    assert times == sorted(times)
    assert times[-1] == market.now() == 3.0
    slots = [m.slot for m in messages]
    assert first.slot <= slots[0] and slots == sorted(slots)
    assert slots[-1] <= market.chain.current_slot()


async def test_a_landed_transaction_publishes_its_pools_before_it_is_confirmed(
    market: SimulatedMarket,
) -> None:
    sol, bonk = REGISTRY.resolve("SOL"), REGISTRY.resolve("BONK")
    feed = market.feed
    quote = market.venues["Raydium"].best_quote(sol, bonk, sol.to_base(Decimal(10)))
    tx = await market.chain.build([quote], min_out=0)
    after = feed.last_seq
    await market.chain.submit(tx)
    status = await market.chain.wait(tx.signature, timeout=WAIT)
    assert status.state is TxState.LANDED
    assert status.receipt is not None

    with feed.subscribe(after_seq=after, stream_id=feed.stream_id) as sub:
        updates = await take(sub, feed.last_seq - after)
    assert {u.pool_id for u in updates if isinstance(u, AccountUpdate)} == {
        hop.pool_id for hop in quote.hops
    }
    assert all(u.slot == status.receipt.slot for u in updates)


async def test_a_step_that_moves_no_pool_still_tells_the_clock() -> None:
    empty = SimulatedMarket(PROFILES["instant"], pools=())
    with empty.feed.subscribe() as sub:
        await take(sub, 1)
        empty.step(2)
        notices = await take(sub, 2)
    assert all(isinstance(n, SlotNotice) for n in notices)
    assert [n.market_time for n in notices] == [1.0, 2.0]
    assert seqs(notices) == [1, 2]


async def test_a_new_pool_is_published_whole_and_is_in_later_snapshots(
    market: SimulatedMarket,
) -> None:
    feed = market.feed
    spec = PoolSpec("Raydium", "BONK", "JUP", 500_000)
    with feed.subscribe() as sub:
        await take(sub, 1)
        pool = market.add_pool(spec)
        [update] = await take(sub, 1)
    assert isinstance(update, AccountUpdate)
    assert (update.venue, update.pool_id, update.state) == ("Raydium", pool.pool_id, pool.state())
    assert pool_from_state(update.state).state() == pool.state()
    assert pool.pool_id in {p.pool_id for p in feed.snapshot().pools}
    assert market.venues["Raydium"].pools[pool.pool_id] is pool
    with pytest.raises(ValueError, match="already"):
        market.add_pool(spec)
    with pytest.raises(ValueError, match="already"):
        market.add_pool(PoolSpec("Raydium", "JUP", "BONK", 500_000))  # the same pair


async def test_every_message_is_json_able(market: SimulatedMarket) -> None:
    with market.feed.subscribe() as sub:
        market.step()
        market.feed.notice()
        messages = await take(sub, market.feed.last_seq + 1)
    for message in messages:
        json.dumps(dataclasses.asdict(message), allow_nan=False)


# -- resuming --------------------------------------------------------------------------


async def test_resuming_after_a_seq_continues_with_no_gap() -> None:
    feed, pool = small_feed()
    with feed.subscribe() as sub:
        await take(sub, 1)  # the snapshot
        for _ in range(3):
            feed.notice()
        seen = await take(sub, 2)  # a connection that broke after seq 2
    pool.swap("X", 10_000)
    feed.publish(pool)
    feed.notice()

    with feed.subscribe(after_seq=seen[-1].seq, stream_id=feed.stream_id) as sub:
        resumed = await take(sub, 3)
    assert seqs(resumed) == [3, 4, 5]
    assert not any(isinstance(m, Snapshot) for m in resumed)
    assert isinstance(resumed[1], AccountUpdate)


async def test_resuming_when_nothing_was_missed_waits_for_the_next_message() -> None:
    feed, _ = small_feed()
    feed.notice()
    with feed.subscribe(after_seq=1, stream_id=feed.stream_id) as sub:
        waiting = asyncio.create_task(sub.next())
        await asyncio.sleep(0)  # one turn of the loop: the task reaches its wait
        assert not waiting.done()
        feed.notice()
        async with asyncio.timeout(WAIT):
            message = await waiting
    assert (type(message), message.seq) == (SlotNotice, 2)


async def test_resuming_from_a_seq_older_than_the_history_gets_a_snapshot() -> None:
    feed, _ = small_feed(history=4)
    for _ in range(10):
        feed.notice()
    with feed.subscribe(after_seq=5, stream_id=feed.stream_id) as sub:
        [first] = await take(sub, 1)
    assert isinstance(first, Snapshot)
    assert first.seq == 10
    with feed.subscribe(after_seq=6, stream_id=feed.stream_id) as sub:  # 7..10 still held
        assert seqs(await take(sub, 4)) == [7, 8, 9, 10]


async def test_another_stream_gets_a_snapshot() -> None:
    feed, _ = small_feed()
    restarted, _ = small_feed()
    assert restarted.stream_id != feed.stream_id
    feed.notice()
    with feed.subscribe(after_seq=1, stream_id=restarted.stream_id) as sub:
        [first] = await take(sub, 1)
    assert isinstance(first, Snapshot)
    assert first.stream_id == feed.stream_id


async def test_a_seq_the_stream_never_reached_gets_a_snapshot() -> None:
    feed, _ = small_feed()
    with feed.subscribe(after_seq=99, stream_id=feed.stream_id) as sub:
        [first] = await take(sub, 1)
    assert isinstance(first, Snapshot)


# -- slow subscribers ------------------------------------------------------------------


async def test_a_subscriber_more_than_its_inbox_behind_is_told_to_resubscribe() -> None:
    feed, _ = small_feed()
    with feed.subscribe(inbox=3) as sub:
        [snapshot] = await take(sub, 1)
        for _ in range(3):
            feed.notice()
        assert seqs(await take(sub, 3)) == [1, 2, 3]  # a full inbox is not behind
        for _ in range(4):
            feed.notice()
        with pytest.raises(FeedLagged) as lagged:
            await sub.next()
    assert (lagged.value.stream_id, lagged.value.last_seq) == (feed.stream_id, 3)
    assert snapshot.seq == 0
    # Resuming after seq 3 would start 4 behind: too far for the inbox, so a snapshot.
    with feed.subscribe(after_seq=3, stream_id=feed.stream_id, inbox=3) as sub:
        [first] = await take(sub, 1)
    assert isinstance(first, Snapshot)
    assert first.seq == 7


async def test_closing_ends_a_subscription_even_while_it_waits() -> None:
    feed, _ = small_feed()
    sub = feed.subscribe()
    await take(sub, 1)
    waiting = asyncio.create_task(sub.next())
    await asyncio.sleep(0)  # one turn of the loop: the task reaches its wait
    sub.close()
    with pytest.raises(FeedClosed):
        async with asyncio.timeout(WAIT):
            await waiting
    with pytest.raises(FeedClosed):
        await sub.next()


async def test_a_cancelled_wait_leaves_other_subscribers_waiting() -> None:
    feed, _ = small_feed()
    with feed.subscribe() as a, feed.subscribe() as b:
        await take(a, 1)
        await take(b, 1)
        gone = asyncio.create_task(a.next())
        staying = asyncio.create_task(b.next())
        await asyncio.sleep(0)  # one turn of the loop: both tasks reach their wait
        gone.cancel()
        feed.notice()
        async with asyncio.timeout(WAIT):
            assert (await staying).seq == 1
        assert gone.cancelled()


# -- a copy of every pool --------------------------------------------------------------

PAIRS = [("SOL", "USDC"), ("USDC", "SOL"), ("BONK", "USDC"), ("JUP", "SOL"), ("USDT", "USDC")]


async def random_swap(market: SimulatedMarket, rng: random.Random) -> None:
    token_in, token_out = (REGISTRY.resolve(s) for s in rng.choice(PAIRS))
    usd = Decimal(rng.choice([10, 5_000, 200_000, 2_000_000]))
    amount = int(usd / Decimal(str(price_usd(token_in.symbol))) * token_in.scale)
    await land_swap(market, rng.choice(["Raydium", "Meteora"]), token_in, token_out, amount, WAIT)


def price_usd(symbol: str) -> float:
    return {"SOL": 150.0, "USDC": 1.0, "USDT": 1.0, "BONK": 0.00002, "JUP": 0.9}[symbol]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_copy_built_from_the_feed_equals_the_market_pools(seed: int) -> None:
    market = SimulatedMarket(PROFILES["instant"], seed=seed)
    rng = random.Random(seed)
    mirror = Mirror()
    with market.feed.subscribe() as sub:
        for step in range(30):
            if rng.random() < 0.6:
                await random_swap(market, rng)
            else:
                market.step(rng.choice([1, 1, 3]))
            if step == 10:
                market.add_pool(PoolSpec("Meteora", "BONK", "JUP", 400_000, 25, 10_000, 60))
            await mirror.catch_up(sub, market.feed)

    pools = market_pools(market)
    assert set(mirror.pools) == set(pools)
    assert mirror.market_time == market.now()
    for pool_id, pool in pools.items():
        copy = mirror.pools[pool_id]
        assert over_json(copy.state()) == over_json(pool.state()), pool_id
        for token_in in (pool.token_x, pool.token_y):
            for amount in (1, 10**6, 10**12, 10**18):
                assert outcome(copy, token_in, amount, mirror.market_time) == outcome(
                    pool, token_in, amount, market.now()
                ), (pool_id, token_in, amount)


# -- while the market runs -------------------------------------------------------------


async def test_slot_notices_go_out_while_the_market_runs() -> None:
    market = SimulatedMarket(PROFILES["instant"], seed=1)
    feed = market.feed
    with feed.subscribe() as sub:
        await take(sub, 1)
        await market.start()
        try:
            notices = await take(sub, 2)  # one per 400 ms slot: well within the bound
        finally:
            await market.stop()
    assert all(isinstance(n, SlotNotice) for n in notices)
    assert seqs(notices) == [1, 2]
    assert notices[0].slot <= notices[1].slot
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "market-slots"]
