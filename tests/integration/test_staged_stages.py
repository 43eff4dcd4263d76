"""Stages that take no time to speak of are written together: a route quoted from the
streamed pools and the transaction built for it reach the store in the submitted event's
commit, so a worker holds an order for one commit, not three. Each event keeps its own
moment and seq, and nobody sees one before it is stored. A route quoted by venue calls is
written first, while the calls take their time; a failed attempt is written as it went
before the next one counts from it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from order_engine.app import feed_source
from order_engine.config import Settings
from order_engine.engine import Engine
from order_engine.hub import MemoryHub
from order_engine.market import MarketData, follow
from order_engine.orders import TERMINAL, Status, Transition
from order_engine.venues import SimulatedMarket
from tests.support.engines import build_engine, history, reach
from tests.support.factories import order_request
from tests.support.faulty_store import FaultyStore

STAGES = [Status.PENDING, Status.ROUTING, Status.BUILDING, Status.SUBMITTED, Status.CONFIRMED]


def statuses(transition: Transition) -> list[Status]:
    return [e.status for e in transition.events]


@asynccontextmanager
async def following(market: SimulatedMarket, settings: Settings) -> AsyncIterator[MarketData]:
    """The market's pools, streamed into this process and fresh (quotes come from them)."""
    data = MarketData(max_staleness_slots=settings.venues.max_staleness_slots)
    source = feed_source(market)
    assert source is not None
    task = asyncio.create_task(follow(data, source))
    try:
        async with asyncio.timeout(5):
            await data.reached(1)  # the first snapshot
        yield data
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def streamed(
    faulty_store: FaultyStore, memory_hub: MemoryHub, market: SimulatedMarket, settings: Settings
) -> AsyncIterator[Engine]:
    """As the `engine` fixture (which quotes by venue calls), quoting from the stream."""
    await market.start()
    try:
        async with following(market, settings) as data:
            engine = build_engine(
                store=faulty_store,
                hub=memory_hub,
                market=market,
                settings=settings,
                market_data=data,
                quote_from_stream=True,
            )
            await engine.start()
            try:
                yield engine
            finally:
                faulty_store.faults.clear()
                await engine.stop(grace=0)
    finally:
        await market.stop()


def appended(store: FaultyStore, order_id: str) -> list[list[Status]]:
    """The statuses of each append of the order, in the order they were made."""
    return [
        statuses(c.args[0])
        for c in store.faults.calls
        if c.method == "append" and c.args[0].event.order_id == order_id
    ]


async def test_a_route_quoted_from_the_stream_is_written_with_the_submitted_event(
    streamed: Engine, faulty_store: FaultyStore, memory_hub: MemoryHub
) -> None:
    order = await streamed.submit(order_request())
    assert await reach(faulty_store, memory_hub, order.order_id, TERMINAL) is Status.CONFIRMED
    assert appended(faulty_store, order.order_id) == [
        [Status.ROUTING, Status.BUILDING, Status.SUBMITTED],
        [Status.CONFIRMED],
    ]
    events = await faulty_store.events(order.order_id)
    assert [e.status for e in events] == STAGES
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    # Each stage keeps the moment it happened.
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert events[1].data["quoteSource"] == "stream"
    # Every stage was published, each once, in order, as stored.
    assert memory_hub.recent(order.order_id, 0) == events
    stored = await faulty_store.get(order.order_id)
    assert stored is not None
    assert (stored.attempts, stored.dex) == (1, events[2].data["dex"])


async def test_a_route_quoted_by_venue_calls_is_written_before_the_calls(
    engine: Engine, faulty_store: FaultyStore, memory_hub: MemoryHub
) -> None:
    order = await engine.submit(order_request())
    assert await reach(faulty_store, memory_hub, order.order_id, TERMINAL) is Status.CONFIRMED
    assert appended(faulty_store, order.order_id) == [
        [Status.ROUTING],
        [Status.BUILDING, Status.SUBMITTED],
        [Status.CONFIRMED],
    ]
    assert await history(faulty_store, order.order_id) == STAGES


async def test_a_failed_attempt_is_written_as_it_went_before_the_next_one(
    streamed: Engine, faulty_store: FaultyStore, memory_hub: MemoryHub, market: SimulatedMarket
) -> None:
    market.chain.fail_next_builds(1)  # the RPC node does not answer the first build
    order = await streamed.submit(order_request())
    assert await reach(faulty_store, memory_hub, order.order_id, TERMINAL) is Status.CONFIRMED
    events = await faulty_store.events(order.order_id)
    assert [e.status for e in events] == [
        Status.PENDING,
        Status.ROUTING,
        Status.BUILDING,
        Status.ROUTING,
        Status.BUILDING,
        Status.SUBMITTED,
        Status.CONFIRMED,
    ]
    assert [e.data.get("attempt") for e in events if e.status is Status.ROUTING] == [1, 2]
    stored = await faulty_store.get(order.order_id)
    assert stored is not None
    assert stored.attempts == 2


async def test_attempts_are_counted_to_the_limit_when_each_is_written_late(
    streamed: Engine,
    faulty_store: FaultyStore,
    memory_hub: MemoryHub,
    market: SimulatedMarket,
    settings: Settings,
) -> None:
    attempts = settings.engine.max_attempts
    market.chain.fail_next_builds(attempts + 5)
    order = await streamed.submit(order_request())
    assert await reach(faulty_store, memory_hub, order.order_id, TERMINAL) is Status.FAILED
    events = await faulty_store.events(order.order_id)
    routed = [e for e in events if e.status is Status.ROUTING]
    assert [e.data["attempt"] for e in routed] == list(range(1, attempts + 1))
    assert events[-1].data["attempts"] == attempts
