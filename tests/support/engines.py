"""An `Engine` driven directly, without HTTP: wired from its parts as `order_engine.app`
wires it, and waited on through its hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection

from order_engine.config import Settings
from order_engine.engine import Engine
from order_engine.hub import Hub
from order_engine.market import MarketData, StreamedVenue
from order_engine.metrics import Metrics
from order_engine.orders import Status
from order_engine.routing import Router
from order_engine.store import Store
from order_engine.venues.base import Market, Venue
from order_engine.venues.tokens import REGISTRY


def build_engine(
    *,
    store: Store,
    hub: Hub,
    market: Market,
    settings: Settings,
    market_data: MarketData | None = None,
    clock: Callable[[], float] = time.time,
    quote_from_stream: bool = False,
) -> Engine:
    """One process's engine on its own store: no claims after start-up, as on SQLite.
    `market_data`: the streamed pools armed orders fire on; routing quotes from the venues,
    or with `quote_from_stream` from those pools while they are fresh, as the app does."""
    venues: list[Venue] = list(market.venues.values())
    if quote_from_stream:
        assert market_data is not None, "quoting from the stream needs the streamed pools"
        venues = [StreamedVenue(v, market_data) for v in venues]
    router = Router(
        venues,
        quote_timeout=settings.engine.quote_timeout_ms / 1000,
        split_min_gain_bps=settings.venues.split_min_gain_bps,
        split_steps=settings.venues.split_steps,
        max_price_impact_bps=settings.orders.max_price_impact_bps,
    )
    return Engine(
        store=store,
        hub=hub,
        router=router,
        chain=market.chain,
        registry=REGISTRY,
        settings=settings.engine,
        lease_s=settings.engine.lease_s,
        claim_interval=None,
        metrics=Metrics(),
        market_data=market_data,
        quote_from_stream=quote_from_stream,
        default_expiry_s=settings.orders.default_expiry_s,
        clock=clock,
    )


async def reach(
    store: Store, hub: Hub, order_id: str, statuses: Collection[Status], timeout: float = 5
) -> Status:
    """Wait (on the hub, no polling) until the order's stored status is one of `statuses`."""
    async with asyncio.timeout(timeout), hub.subscribe(order_id) as sub:
        order = await store.get(order_id)
        assert order is not None, order_id
        status = order.status
        while status not in statuses:
            event = await sub.next()
            if event is None:  # events were dropped: the store says where the order is
                order = await store.get(order_id)
                assert order is not None
                status = order.status
            else:
                status = event.status
        return status


async def holding(engine: Engine, expected: dict[str, int], timeout: float = 5) -> None:
    """Wait until the engine holds `expected` open orders by type. An order is stored open
    before its trigger book takes it, so a reader of the store can see `open` a moment before
    the count does; the book has no event of its own to wait on."""
    async with asyncio.timeout(timeout):
        while engine.open_orders() != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def history(store: Store, order_id: str) -> list[Status]:
    return [e.status for e in await store.events(order_id)]
