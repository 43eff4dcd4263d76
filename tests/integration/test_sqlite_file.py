"""A SQLite database file deleted or replaced while the engine runs: the engine stops writing
(503, saying why) and is not ready, instead of writing into a file nobody will read again."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

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
