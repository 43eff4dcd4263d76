"""PostgreSQL or Redis goes away and comes back: clear 503s meanwhile, nothing lost, no
restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.app import build_app
from order_engine.venues import SimulatedMarket
from tests.conftest import assert_gap_free, make_settings, post_order, services, watch
from tests.proxy import TcpProxy
from tests.services import REDIS_HOST, REDIS_PORT, postgres_schema, require_redis


@contextmanager
def logged(logger: str, text: str) -> Iterator[asyncio.Event]:
    """An event set when `logger` logs a message containing `text`."""
    seen = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    handler = Handler()
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield seen
    finally:
        target.removeHandler(handler)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    async with postgres_schema() as url:
        parts = urlsplit(url)
        p = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        await p.start()
        p.url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{p.port}"))  # type: ignore[attr-defined]
        yield p
        await p.stop()


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
    with logged("order_engine.engine", "resuming from the stored state") as write_failed:
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
