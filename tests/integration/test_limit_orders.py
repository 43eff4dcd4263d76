"""Limit orders in the engine: armed on the streamed market, fired when the best route pays
the limit, never filled below it; expired, cancelled, armed again after a transient
failure, and re-armed from the store after a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from order_engine.config import Settings
from order_engine.engine import Engine, NotCancellable, OrderNotFound
from order_engine.engine.run import OrderRun
from order_engine.engine.triggers import limit_threshold
from order_engine.hub import Hub, MemoryHub
from order_engine.market import LocalFeedSource, MarketData, follow
from order_engine.orders import TERMINAL, Order, OrderType, Status, check_transition
from order_engine.store import Store
from order_engine.store.sqlite import SQLiteStore
from order_engine.venues import SimulatedMarket
from order_engine.venues.tokens import REGISTRY
from tests.support.engines import build_engine, history, holding, reach
from tests.support.factories import order_request

SOL, USDC = REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC")


@dataclass
class Rig:
    engine: Engine
    store: Store
    hub: Hub
    market: SimulatedMarket
    data: MarketData

    def best_price(self, amount: str = "2") -> Decimal:
        """USDC per SOL the best venue pays for `amount` SOL now."""
        base = SOL.to_base(Decimal(amount))
        best = max(v.best_quote(SOL, USDC, base).amount_out for v in self.market.venues.values())
        return USDC.to_ui(best) / Decimal(amount)


@asynccontextmanager
async def rig(store: Store, market: SimulatedMarket, settings: Settings) -> AsyncIterator[Rig]:
    """An engine whose armed orders follow the market's account stream."""
    hub = MemoryHub()
    await hub.start()
    data = MarketData(max_staleness_slots=settings.venues.max_staleness_slots)
    following = asyncio.create_task(follow(data, LocalFeedSource(market.feed)))
    engine = build_engine(store=store, hub=hub, market=market, settings=settings, market_data=data)
    try:
        async with asyncio.timeout(5):
            await data.reached(0)
        await engine.start()
        yield Rig(engine, store, hub, market, data)
    finally:
        await engine.stop(grace=0)
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await hub.stop()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = SQLiteStore(tmp_path / "limit.db", synchronous="NORMAL")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def armed(store: Store, market: SimulatedMarket, settings: Settings) -> AsyncIterator[Rig]:
    """On both stores."""
    await market.start()
    try:
        async with rig(store, market, settings) as r:
            yield r
    finally:
        await market.stop()


def limit(price: Decimal, expires_in: float = 60.0) -> dict[str, Any]:
    return {
        "order_type": OrderType.LIMIT,
        "limit_price": price.quantize(Decimal("0.000001")),
        "expires_at": time.time() + expires_in,
    }


def assert_legal(statuses: list[Status]) -> None:
    current = None
    for status in statuses:
        check_transition(current, status)
        current = status


async def test_a_limit_the_market_already_pays_fires_and_fills_at_or_above_it(armed: Rig) -> None:
    price = armed.best_price() * Decimal("0.99")
    order = await armed.engine.submit(order_request(amount="2", **limit(price)))
    assert await reach(armed.store, armed.hub, order.order_id, TERMINAL) is Status.CONFIRMED
    events = await armed.store.events(order.order_id)
    assert [e.status for e in events] == [
        Status.PENDING,
        Status.OPEN,
        Status.ROUTING,
        Status.BUILDING,
        Status.SUBMITTED,
        Status.CONFIRMED,
    ]
    assert events[1].data["orderType"] == "limit"
    assert Decimal(events[1].data["limitPrice"]) == price.quantize(Decimal("0.000001"))
    trigger = events[2].data["trigger"]
    assert trigger["slot"] >= 0 and trigger["price"] >= float(price)
    stored = await armed.store.get(order.order_id)
    assert stored is not None and stored.amount_out is not None
    threshold = limit_threshold(OrderRun(stored, SOL, USDC))
    assert threshold is not None
    # Never below the limit: the chain enforced it as the minimum output.
    assert stored.min_amount_out is not None and stored.min_amount_out >= threshold
    assert stored.amount_out >= threshold


async def test_a_limit_above_the_market_stays_open_until_it_expires(armed: Rig) -> None:
    price = armed.best_price() * Decimal("1.05")
    # Armed long enough to be counted however slow the machine; the other expires soon
    # (perhaps before it is armed, under load: then it expires at once, still from open).
    lasting = await armed.engine.submit(order_request(**limit(price, expires_in=60)))
    order = await armed.engine.submit(order_request(**limit(price, expires_in=0.5)))
    assert await reach(armed.store, armed.hub, lasting.order_id, {Status.OPEN}) is Status.OPEN
    assert await reach(armed.store, armed.hub, order.order_id, TERMINAL) is Status.EXPIRED
    assert await history(armed.store, order.order_id) == [
        Status.PENDING,
        Status.OPEN,
        Status.EXPIRED,
    ]
    await holding(armed.engine, {"limit": 1, "sniper": 0})  # the lasting one


async def test_cancel_an_open_order_and_refuse_a_finished_one(armed: Rig) -> None:
    waiting = await armed.engine.submit(
        order_request(**limit(armed.best_price() * Decimal("1.05")))
    )
    await reach(armed.store, armed.hub, waiting.order_id, {Status.OPEN})
    cancelled = await armed.engine.cancel(waiting.order_id)
    assert cancelled.status is Status.CANCELLED
    assert armed.engine.open_orders()["limit"] == 0
    events = await armed.store.events(waiting.order_id)
    assert events[-1].status is Status.CANCELLED and events[-1].data == {"previous": "open"}

    market_order = await armed.engine.submit(order_request())
    await reach(armed.store, armed.hub, market_order.order_id, TERMINAL)
    with pytest.raises(NotCancellable) as refused:
        await armed.engine.cancel(market_order.order_id)
    assert refused.value.order.status is Status.CONFIRMED
    with pytest.raises(NotCancellable):
        await armed.engine.cancel(waiting.order_id)  # cancelled already
    with pytest.raises(OrderNotFound):
        await armed.engine.cancel("00000000-0000-4000-8000-000000000000")


async def test_another_clients_order_is_not_found(armed: Rig) -> None:
    order = await armed.engine.submit(
        order_request(client_id="alice", **limit(armed.best_price() * Decimal("1.05")))
    )
    with pytest.raises(OrderNotFound):
        await armed.engine.cancel(order.order_id, client_id="bob")
    assert (await armed.engine.cancel(order.order_id, client_id="alice")).status is Status.CANCELLED


async def test_a_dropped_transaction_arms_the_order_again_and_it_fires_again(armed: Rig) -> None:
    armed.market.chain.drop_next(1)
    order = await armed.engine.submit(order_request(**limit(armed.best_price() * Decimal("0.99"))))
    assert await reach(armed.store, armed.hub, order.order_id, TERMINAL) is Status.CONFIRMED
    events = await armed.store.events(order.order_id)
    statuses = [e.status for e in events]
    assert_legal(statuses)
    assert statuses[:6] == [
        Status.PENDING,
        Status.OPEN,
        Status.ROUTING,
        Status.BUILDING,
        Status.SUBMITTED,
        Status.OPEN,
    ]
    assert events[5].data["rearmed"]["code"] == "tx_dropped"
    assert statuses[-1] is Status.CONFIRMED and statuses.count(Status.SUBMITTED) == 2


async def test_open_orders_are_armed_again_after_a_restart(
    sqlite_store: Store, market: SimulatedMarket, settings: Settings
) -> None:
    await market.start()
    try:
        async with rig(sqlite_store, market, settings) as first:
            order = await first.engine.submit(
                order_request(**limit(first.best_price() * Decimal("1.05")))
            )
            await reach(first.store, first.hub, order.order_id, {Status.OPEN})
        async with rig(sqlite_store, market, settings) as second:
            assert second.engine.open_orders()["limit"] == 1
            stored = await second.store.get(order.order_id)
            assert stored is not None and stored.status is Status.OPEN
            cancelled = await second.engine.cancel(order.order_id)
            assert cancelled.status is Status.CANCELLED
            assert second.engine.open_orders()["limit"] == 0
    finally:
        await market.stop()


async def test_cancel_and_expiry_at_once_exactly_one_wins(armed: Rig) -> None:
    """Thirty orders expire at the moment they are cancelled: each ends cancelled or
    expired, never both, and its history is legal."""
    price = armed.best_price() * Decimal("1.05")
    expires_in = 0.4
    orders: list[Order] = [
        await armed.engine.submit(order_request(**limit(price, expires_in=expires_in)))
        for _ in range(30)
    ]
    for order in orders:  # under load one may have expired already
        await reach(armed.store, armed.hub, order.order_id, {Status.OPEN, Status.EXPIRED})
    assert orders[0].expires_at is not None
    await asyncio.sleep(
        max(0.0, orders[0].expires_at - time.time())
    )  # the scenario: cancel at expiry

    async def cancel(order: Order) -> Status:
        try:
            return (await armed.engine.cancel(order.order_id)).status
        except NotCancellable as exc:
            return exc.order.status

    outcomes = await asyncio.gather(*(cancel(o) for o in orders))
    for order, outcome in zip(orders, outcomes, strict=True):
        final = await reach(armed.store, armed.hub, order.order_id, TERMINAL)
        statuses = await history(armed.store, order.order_id)
        assert_legal(statuses)
        assert statuses[-1] is final
        assert sum(s in TERMINAL for s in statuses) == 1
        assert outcome is final and final in (Status.CANCELLED, Status.EXPIRED)


async def test_an_order_the_venues_keep_failing_fires_again_only_after_a_backoff(
    store: Store, market: SimulatedMarket, settings: Settings
) -> None:
    """Its price is there but no venue answers: each time it is armed again it holds off
    longer (the retry backoff, by attempt), instead of firing on every update."""
    settings = settings.replace(engine={"retry_base_ms": 100.0, "retry_max_ms": 1_000.0})
    await market.start()
    try:
        async with rig(store, market, settings) as r:
            price = r.best_price() * Decimal("0.99")
            for venue in market.venues.values():
                venue.faults.down = True  # routing asks the venues: every attempt fails
            order = await r.engine.submit(order_request(**limit(price)))
            async with asyncio.timeout(10), r.hub.subscribe(order.order_id) as sub:
                rearms = 0
                while rearms < 3:
                    event = await sub.next()
                    assert event is not None
                    rearms += event.status is Status.OPEN and "rearmed" in event.data
            await r.engine.cancel(order.order_id)
            events = await r.store.events(order.order_id)
    finally:
        await market.stop()
    opens = [e for e in events if e.status is Status.OPEN and "rearmed" in e.data]
    assert [e.data["rearmed"]["code"] for e in opens[:3]] == ["no_quotes"] * 3
    for n, rearmed in enumerate(opens[:2], start=1):
        fired = next(e for e in events if e.seq > rearmed.seq and e.status is Status.ROUTING)
        # Full jitter between half the ceiling and the ceiling: 100 ms x 2^(attempt - 1).
        assert fired.ts - rearmed.ts >= 0.1 * 2 ** (n - 1) / 2 * 0.99
