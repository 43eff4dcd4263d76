"""History queries at the edges of time answer the same on both stores: never a 500 or 503."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from tests.support.clients import post_order, watch


def cursor(at: float, order_id: str) -> str:
    # json escapes what orjson refuses to write (an unpaired surrogate), as a forger would.
    raw = json.dumps([at, order_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        "from=1e12",
        "to=253402300800",
        "to=1e18",
        "from=253402300799&to=1e300",
    ],
)
async def test_times_beyond_year_9999_mean_the_last_second_the_stores_know(
    any_store_client: TestClient[Any, Application], query: str
) -> None:
    client = any_store_client
    await watch(client, await post_order(client))
    resp = await client.get(f"/api/orders?{query}")
    assert resp.status == 200, await resp.text()
    orders = (await resp.json())["orders"]
    assert len(orders) == (1 if query.startswith("to=") else 0)


@pytest.mark.parametrize(
    "made_up",
    [cursor(1e18, "zz"), cursor(-1e12, "zz"), cursor(1.0, "a\u0000b"), cursor(1.0, "\ud800")],
    ids=["far-future", "before-1970", "nul-in-id", "surrogate-in-id"],
)
async def test_a_cursor_this_api_never_made_is_a_400(
    any_store_client: TestClient[Any, Application], made_up: str
) -> None:
    resp = await any_store_client.get("/api/orders", params={"cursor": made_up})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "invalid_cursor"
