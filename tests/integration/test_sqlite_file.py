"""A SQLite database file deleted or replaced while the engine runs: the engine stops writing
(503, saying why) and is not ready, instead of writing into a file nobody will read again.
A file corrupted mid-way makes the store unready once a read or write meets the damage."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.orders import Order, OrderEvent, Status
from order_engine.store import StoreUnavailable, store_from_url
from tests.support.clients import post_order, watch
from tests.support.factories import ORDER


def database(tmp_path: Path) -> Path:
    return tmp_path / "orders.db"  # where make_settings puts it


async def refused(client: TestClient[Any, Application], what: str) -> None:
    resp = await client.post("/api/order/execute", json=ORDER)
    body = await resp.json()
    assert resp.status == 503, body
    assert body["error"]["code"] == "store_unavailable"  # the why is for operators:
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert what in str(await ready.json()) and "orders.db" in str(await ready.json())


async def test_a_deleted_database_stops_the_writes_and_readiness(
    client: TestClient[Any, Application], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await watch(client, await post_order(client))
    assert (await client.get("/readyz")).status == 200
    database(tmp_path).unlink()
    await refused(client, "was deleted")
    await refused(client, "was deleted")
    told = [
        r
        for r in caplog.records
        if r.name == "order_engine.store" and "was deleted" in r.getMessage()
    ]
    assert len(told) == 1  # the store says it once, not once per write


async def test_a_replaced_database_stops_the_writes_and_readiness(
    client: TestClient[Any, Application], tmp_path: Path
) -> None:
    await watch(client, await post_order(client))
    copy = tmp_path / "copy.db"
    shutil.copyfile(database(tmp_path), copy)
    copy.replace(database(tmp_path))
    await refused(client, "was replaced")


async def test_a_database_corrupted_mid_file_is_not_ready_once_a_read_meets_it(
    tmp_path: Path,
) -> None:
    """The readiness read touches one page of the orders table; pages elsewhere may be
    malformed. Once any read or write meets one, the store stays unready."""
    path = database(tmp_path)
    store = store_from_url(f"sqlite:///{path}")
    await store.open()
    try:
        ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(2_000)]

        async def create(n: int) -> None:
            at = 1_000.0 + n
            order = Order(ids[n], "SOL", "USDC", 10**9, 50, Status.PENDING, 1, 0, at, at)
            await store.create(order, OrderEvent(order.order_id, 1, Status.PENDING, "", at, {}))

        await asyncio.gather(*(create(n) for n in range(len(ids))))
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
            page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = path.stat().st_size // page
        with path.open("r+b") as file:  # a third of the file, mid-way, overwritten
            file.seek(pages // 3 * page)
            file.write(b"\xff" * (pages // 3 * page))
        await store.ping()  # its page is still sound
        met = 0
        for order_id in ids:
            try:
                await store.get(order_id)
            except StoreUnavailable:
                met += 1
        assert met, "no read met the damage"
        with pytest.raises(StoreUnavailable) as unready:
            await store.ping()
        assert "corrupt" in str(unready.value) and str(path) in str(unready.value)
    finally:
        await store.close()
