"""PostgreSQL or Redis goes away and comes back: clear 503s meanwhile, nothing lost, no
restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.api.http import error_middleware
from order_engine.api.sockets import CLOSE_TRY_AGAIN
from order_engine.app import build_app
from order_engine.orders import OrderUpdate, Status, Transition
from order_engine.store import (
    DuplicateOrder,
    SeqConflict,
    StoreConflict,
    StoreError,
    store_from_url,
)
from order_engine.venues import SimulatedMarket
from tests.integration.test_store import event, new_order
from tests.support.clients import assert_gap_free, post_order, services, watch
from tests.support.factories import make_settings
from tests.support.logs import logged
from tests.support.proxy import TcpProxy
from tests.support.services import REDIS_HOST, REDIS_PORT, postgres_behind_proxy, require_redis


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    async with postgres_behind_proxy() as p:
        yield p


@pytest.fixture
async def pg_client(
    aiohttp_client: Any, tmp_path: Path, proxy: TcpProxy, market: SimulatedMarket
) -> TestClient[Any, Application]:
    settings = make_settings(tmp_path, store={"url": proxy.url})  # type: ignore[attr-defined]
    client: TestClient[Any, Application] = await aiohttp_client(build_app(settings, market=market))
    return client


async def test_readiness_and_orders_follow_the_database(
    pg_client: TestClient[Any, Application], proxy: TcpProxy
) -> None:
    assert (await pg_client.get("/readyz")).status == 200
    proxy.cut()
    ready = await pg_client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["store"] != "ok"
    refused = await pg_client.post(
        "/api/order/execute", json={"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1}
    )
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "store_unavailable"
    assert (await pg_client.get("/healthz")).status == 200  # alive, only not ready
    proxy.restore()
    assert (await pg_client.get("/readyz")).status == 200
    order_id = await post_order(pg_client)
    events = await watch(pg_client, order_id)
    assert events[-1]["status"] == "confirmed"


async def test_an_order_over_the_execute_websocket_is_refused_with_a_reason_in_an_outage(
    pg_client: TestClient[Any, Application], proxy: TcpProxy
) -> None:
    proxy.cut()
    async with pg_client.ws_connect("/api/orders/execute") as ws:
        await ws.send_json({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1})
        reply = await ws.receive_json(timeout=10)
        assert reply["error"]["code"] == "store_unavailable"
        closing = await ws.receive(timeout=10)
        assert closing.type is WSMsgType.CLOSE
        assert closing.data == CLOSE_TRY_AGAIN


async def test_an_order_in_flight_during_the_outage_finishes_after_it(
    pg_client: TestClient[Any, Application], proxy: TcpProxy
) -> None:
    chain = services(pg_client).market.chain
    chain.hold()
    order_id = await post_order(pg_client)
    async with pg_client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        while (await ws.receive_json(timeout=5))["status"] != "submitted":
            pass
    proxy.cut()
    with logged("order_engine.engine", "store writes are failing") as write_failed:
        chain.release()  # lands while the engine cannot write it down
        async with asyncio.timeout(10):
            await write_failed.wait()
    proxy.restore()
    events = await watch(pg_client, order_id)
    assert_gap_free(events)
    assert [e["status"] for e in events][-1] == "confirmed"
    assert len(chain.ledger) == 1


async def test_orders_execute_while_redis_is_down(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    """Redis only carries notifications: without it the engine still executes, and the
    watchers re-read the store until it is back."""
    require_redis()
    redis = TcpProxy(REDIS_HOST, REDIS_PORT)
    await redis.start()
    try:
        settings = make_settings(tmp_path, hub={"redis_url": f"redis://127.0.0.1:{redis.port}/0"})
        client = await aiohttp_client(build_app(settings, market=market))
        assert (await client.get("/readyz")).status == 200
        redis.cut()
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["hub"] != "ok"
        order_id = await post_order(client)
        events = await watch(client, order_id)
        assert_gap_free(events)
        assert events[-1]["status"] == "confirmed"
        redis.restore()
    finally:
        await redis.stop()


_T = TypeVar("_T")


async def once_back(call: Callable[[], Awaitable[_T]]) -> _T:
    """`call`'s result, tried again while it meets the outage's broken connections."""
    async with asyncio.timeout(10):
        while True:
            try:
                return await call()
            except StoreError:
                await asyncio.sleep(0.05)  # the caller's retry delay


async def test_an_unreachable_database_is_an_outage_not_a_conflict(proxy: TcpProxy) -> None:
    """What callers tell apart: an outage (retry the same write later) from a refused write
    (re-read the order). A cut connection must be the first, never the second."""
    store = store_from_url(proxy.url)  # type: ignore[attr-defined]
    await store.open()
    try:
        order, first = new_order()
        await store.create(order, first)
        routing = Transition(event(order.order_id, 2, Status.ROUTING), OrderUpdate(attempts=1))
        proxy.cut()
        with pytest.raises(StoreError) as write:
            await store.append(routing)
        with pytest.raises(StoreError) as read:
            await store.get(order.order_id)
        assert not isinstance(write.value, StoreConflict)
        assert not isinstance(read.value, StoreConflict)
        proxy.restore()
        # The same write, once the database is back. A pooled connection the cut broke may
        # fail a call once more (as an outage, never a conflict): the caller tries again.
        await once_back(lambda: store.append(routing))
        stored = await once_back(lambda: store.get(order.order_id))
        assert stored is not None and stored.last_seq == 2
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (StoreError("connection refused"), 503, "store_unavailable"),
        (SeqConflict("00000000-0000-4000-8000-000000000000", 3), 409, "conflict"),
        (DuplicateOrder(new_order()[0]), 409, "conflict"),
        (StoreConflict("refused, no stored order holds its keys"), 409, "conflict"),
    ],
)
async def test_only_an_outage_is_answered_as_one(
    aiohttp_client: Any, error: Exception, status: int, code: str
) -> None:
    """A refused write reaching the API is no reason to tell clients the storage is down
    (and to retry it, as a 503 invites them to)."""

    async def handler(request: web.Request) -> web.Response:
        raise error

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/", handler)
    client = await aiohttp_client(app)
    resp = await client.post("/")
    assert (resp.status, (await resp.json())["error"]["code"]) == (status, code)
