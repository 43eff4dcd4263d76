"""A full disk: while the store refuses writes, orders are refused with a 503, /readyz says
why (reads alone still answer, so it must learn it from the writes), nothing accepted is
lost, and the server is ready again once writes succeed. No disk is filled: SQLite's writer
may not grow its file (what a full disk does to it), PostgreSQL raises its own disk_full
error (SQLSTATE 53100) on every write to the test's schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.app import build_app
from order_engine.store.sqlite import SQLiteStore
from order_engine.venues import SimulatedMarket
from tests.integration.test_openapi import check, document
from tests.support.clients import assert_gap_free, post_order, services, watch
from tests.support.databases import sqlite_disk_full
from tests.support.factories import ORDER, make_settings
from tests.support.logs import logged
from tests.support.services import POSTGRES_URL, postgres_schema

Client = TestClient[Any, Application]
FullDisk = tuple[Client, AbstractAsyncContextManager[None], str]
WAIT_S = 10.0
NO_SPACE = "could not extend file: No space left on device"  # as PostgreSQL words it


@asynccontextmanager
async def postgres_disk_full(url: str) -> AsyncIterator[None]:
    """Every INSERT or UPDATE in the schema of `url` fails as PostgreSQL fails it when its
    disk is full, until the block ends."""
    schema = parse_qs(urlsplit(url).query)["schema"][0]
    conn = await asyncpg.connect(POSTGRES_URL)
    tables = ("orders", "order_events", "write_probe")
    try:
        await conn.execute(
            f'CREATE FUNCTION "{schema}".disk_full() RETURNS trigger LANGUAGE plpgsql AS $$'
            f" BEGIN RAISE EXCEPTION '{NO_SPACE}'"
            " USING ERRCODE = 'disk_full'; END $$"
        )
        for table in tables:
            await conn.execute(
                f'CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON "{schema}".{table}'
                f' FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".disk_full()'
            )
        yield
    finally:
        for table in tables:
            await conn.execute(f'DROP TRIGGER IF EXISTS disk_full ON "{schema}".{table}')
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def full_disk(
    request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> AsyncIterator[FullDisk]:
    """A server over each store, what fills its disk (for as long as it is entered) and
    what the store says then."""
    if request.param == "sqlite":
        client = await aiohttp_client(build_app(make_settings(tmp_path), market=market))
        store = services(client).store
        assert isinstance(store, SQLiteStore)
        yield client, sqlite_disk_full(store), "database or disk is full"
        return
    async with postgres_schema() as url:
        app = build_app(make_settings(tmp_path, store={"url": url}), market=market)
        client = await aiohttp_client(app)
        yield client, postgres_disk_full(url), NO_SPACE
        await client.close()


async def until_submitted(client: Client, order_id: str) -> None:
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        while (await ws.receive_json(timeout=WAIT_S))["status"] != "submitted":
            pass


async def test_a_full_disk_is_not_ready_until_writes_succeed_and_loses_nothing(
    full_disk: FullDisk,
) -> None:
    client, disk_full, reason = full_disk
    chain = services(client).market.chain
    chain.hold()  # accepted orders wait at the chain, their confirmation not yet written
    accepted = [await post_order(client) for _ in range(5)]
    for order_id in accepted:
        await until_submitted(client, order_id)
    assert (await client.get("/readyz")).status == 200
    async with disk_full:
        with logged("order_engine.engine", "store writes are failing") as write_failed:
            # Until the disk is full: SQLite's file fills with what the server writes.
            for _ in range(2_000):
                resp = await client.post("/api/order/execute", json=ORDER)
                if resp.status != 201:
                    break
                accepted.append((await resp.json())["orderId"])
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "store_unavailable"
            ready = await client.get("/readyz")
            assert ready.status == 503, await ready.text()
            chain.release()  # they land; the engine cannot write that down
            async with asyncio.timeout(WAIT_S):
                await write_failed.wait()
        ready = await client.get("/readyz")
        assert ready.status == 503
        body = await ready.json()
        assert body["store"] == f"writes are failing: {reason}", body
        check(await document(client), "/readyz", "get", 503, body)
        assert (await client.get("/healthz")).status == 200  # alive, only not ready
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    for order_id in accepted:
        events = await watch(client, order_id)
        assert_gap_free(events)
        assert events[-1]["status"] == "confirmed", events
    assert len(chain.ledger) == len(accepted)
    assert (await client.get("/readyz")).status == 200
