"""Crash recovery: an engine killed mid-order is restarted on the same database and finishes
every order, and no swap ever lands twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from order_engine.app import Services, build_services
from order_engine.config import Settings
from order_engine.engine import OrderRequest
from order_engine.orders import TERMINAL, Status
from order_engine.venues import SimulatedMarket
from order_engine.venues.tokens import REGISTRY
from tests.support.factories import make_settings

REQUEST = OrderRequest(REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC"), 2_000_000_000, 50)


@asynccontextmanager
async def running(settings: Settings, market: SimulatedMarket) -> AsyncIterator[Services]:
    """An engine with no HTTP in front; on exit it is killed, not stopped: the database
    is left exactly as a crash would leave it."""
    s = build_services(settings, market=market)
    await s.store.open()
    await s.hub.start()
    await s.engine.start()
    try:
        yield s
    finally:
        await s.engine.abort()
        await s.hub.stop()
        await s.store.abort()  # type: ignore[attr-defined]


async def reach(s: Services, order_id: str, statuses: set[Status], timeout: float = 5) -> Status:
    """Wait (on the hub, no polling) until the order's stored status is one of `statuses`."""
    async with asyncio.timeout(timeout), s.hub.subscribe(order_id) as sub:
        order = await s.store.get(order_id)
        assert order is not None
        status = order.status
        while status not in statuses:
            event = await sub.next()
            if event is None:
                order = await s.store.get(order_id)
                assert order is not None
                status = order.status
            else:
                status = event.status
        return status


async def history(s: Services, order_id: str) -> list[Status]:
    return [e.status for e in await s.store.events(order_id)]


async def test_crash_after_submit_then_landing_while_down(
    tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = make_settings(tmp_path)
    market.chain.hold()
    async with running(settings, market) as first:
        order = await first.engine.submit(REQUEST)
        await reach(first, order.order_id, {Status.SUBMITTED})
        stored = await first.store.get(order.order_id)
        assert stored is not None and stored.tx_hash is not None
        signature = stored.tx_hash
    # The engine is dead; its transaction lands meanwhile.
    market.chain.release()
    landed = await market.chain.wait(signature, 5)
    assert landed.state == "landed"

    async with running(settings, market) as second:
        assert await reach(second, order.order_id, TERMINAL) is Status.CONFIRMED
        assert await history(second, order.order_id) == [
            Status.PENDING,
            Status.ROUTING,
            Status.BUILDING,
            Status.SUBMITTED,
            Status.CONFIRMED,
        ]
        events = await second.store.events(order.order_id)
        assert events[-1].data["txHash"] == signature
    assert market.chain.landed_count(signature) == 1
    assert len(market.chain.ledger) == 1


async def test_crash_after_submit_landing_after_restart(
    tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = make_settings(tmp_path)
    market.chain.hold()
    async with running(settings, market) as first:
        order = await first.engine.submit(REQUEST)
        await reach(first, order.order_id, {Status.SUBMITTED})
    async with running(settings, market) as second:
        # The restarted engine waits on the chain for the same transaction: it must not
        # route the order again while the first transaction may still land.
        market.chain.release()
        assert await reach(second, order.order_id, TERMINAL) is Status.CONFIRMED
        assert (await history(second, order.order_id)).count(Status.SUBMITTED) == 1
    assert len(market.chain.ledger) == 1


async def test_crash_mid_routing_resumes_the_order(tmp_path: Path, market: SimulatedMarket) -> None:
    settings = make_settings(tmp_path, engine={"quote_timeout_ms": 60_000.0})
    for venue in market.venues.values():
        venue.faults.timeout = True
    async with running(settings, market) as first:
        order = await first.engine.submit(REQUEST)
        await reach(first, order.order_id, {Status.ROUTING})
    for venue in market.venues.values():
        venue.faults.timeout = False
    async with running(settings, market) as second:
        assert await reach(second, order.order_id, TERMINAL) is Status.CONFIRMED
        events = await second.store.events(order.order_id)
        assert [e.status for e in events] == [
            Status.PENDING,
            Status.ROUTING,
            Status.ROUTING,
            Status.BUILDING,
            Status.SUBMITTED,
            Status.CONFIRMED,
        ]
        # The crash is not the venue's failure: the interrupted attempt is continued.
        assert [e.data.get("attempt") for e in events[1:3]] == [1, 1]
    assert len(market.chain.ledger) == 1


async def test_queued_orders_survive_a_crash(tmp_path: Path, market: SimulatedMarket) -> None:
    settings = make_settings(tmp_path, engine={"quote_timeout_ms": 60_000.0, "workers": 1})
    for venue in market.venues.values():
        venue.faults.timeout = True
    async with running(settings, market) as first:
        orders = [await first.engine.submit(REQUEST) for _ in range(5)]
    for venue in market.venues.values():
        venue.faults.timeout = False
    async with running(settings, market) as second:
        for order in orders:
            assert await reach(second, order.order_id, TERMINAL) is Status.CONFIRMED
    assert len(market.chain.ledger) == 5


async def test_more_unfinished_orders_than_the_queue_holds_all_finish(
    tmp_path: Path, market: SimulatedMarket
) -> None:
    for venue in market.venues.values():
        venue.faults.timeout = True
    settings = make_settings(tmp_path, engine={"quote_timeout_ms": 60_000.0, "workers": 1})
    async with running(settings, market) as first:
        orders = [await first.engine.submit(REQUEST) for _ in range(5)]
    for venue in market.venues.values():
        venue.faults.timeout = False
    small = make_settings(tmp_path, engine={"queue_size": 2, "workers": 1})
    async with running(small, market) as second:
        for order in orders:
            assert await reach(second, order.order_id, TERMINAL) is Status.CONFIRMED
    assert len(market.chain.ledger) == 5
