"""Order history (GET /api/orders) and the firehose (GET /api/orders/stream)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.api.auth import new_key
from order_engine.app import build_app
from order_engine.venues import SimulatedMarket
from tests.integration.test_openapi import check, check_message, document
from tests.support.clients import post_order, watch
from tests.support.factories import ORDER, make_settings


async def page(client: TestClient[Any, Application], **params: Any) -> dict[str, Any]:
    resp = await client.get("/api/orders", params=params)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def test_history_pages_newest_first_stable_under_inserts(
    client: TestClient[Any, Application],
) -> None:
    ids = [await post_order(client) for _ in range(5)]
    doc = await document(client)
    first = await page(client, limit=2)
    check(doc, "/api/orders", "get", 200, first)
    assert [o["orderId"] for o in first["orders"]] == ids[:2:-1][:2]
    newer = await post_order(client)  # arrives between pages
    second = await page(client, limit=2, cursor=first["nextCursor"])
    third = await page(client, limit=2, cursor=second["nextCursor"])
    seen = [o["orderId"] for p in (first, second, third) for o in p["orders"]]
    assert seen == list(reversed(ids))
    assert newer not in seen
    assert third["nextCursor"] is None


async def test_history_filters(client: TestClient[Any, Application]) -> None:
    sol = await post_order(client)
    usdc = await post_order(client, tokenIn="USDC", tokenOut="SOL", amount=100)
    await watch(client, sol)
    await watch(client, usdc)
    by_token = await page(client, tokenIn="usdc")
    assert [o["orderId"] for o in by_token["orders"]] == [usdc]
    confirmed = await page(client, status="confirmed,failed")
    assert {o["orderId"] for o in confirmed["orders"]} == {sol, usdc}
    assert (await page(client, status="pending"))["orders"] == []
    assert (await page(client, **{"from": "2000-01-01T00:00:00Z", "to": 1}))["orders"] == []


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"limit": "0"}, "invalid_limit", "limit"),
        ({"limit": "501"}, "invalid_limit", "limit"),
        ({"status": "done"}, "invalid_status", "status"),
        ({"tokenIn": "DOGE"}, "unknown_token", "tokenIn"),
        ({"from": "yesterday"}, "invalid_time", "from"),
        ({"to": "2026-01-01T00:00:00"}, "invalid_time", "to"),
        ({"cursor": "!!"}, "invalid_cursor", "cursor"),
        ({"cursor": "WzFd"}, "invalid_cursor", "cursor"),
        ({"sort": "asc"}, "unknown_parameter", "sort"),
    ],
)
async def test_history_refuses_bad_parameters(
    client: TestClient[Any, Application], params: dict[str, str], code: str, field: str
) -> None:
    resp = await client.get("/api/orders", params=params)
    body = await resp.json()
    assert resp.status == 400
    assert (body["error"]["code"], body["error"]["field"]) == (code, field)
    check(await document(client), "/api/orders", "get", 400, body)


async def test_history_shows_a_client_only_its_orders(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    alice, alice_entry = new_key("alice")
    bob, bob_entry = new_key("bob")
    settings = make_settings(tmp_path, auth={"api_keys": (alice_entry, bob_entry)})
    client = await aiohttp_client(build_app(settings, market=market))
    resp = await client.post("/api/order/execute", json=ORDER, headers={"x-api-key": alice})
    order_id = (await resp.json())["orderId"]
    mine = await client.get("/api/orders", headers={"x-api-key": alice})
    theirs = await client.get("/api/orders", headers={"x-api-key": bob})
    assert [o["orderId"] for o in (await mine.json())["orders"]] == [order_id]
    assert (await theirs.json())["orders"] == []


async def firehose(
    client: TestClient[Any, Application], count: int, **params: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Open the firehose, submit `count` orders, collect until each is terminal."""
    events: list[dict[str, Any]] = []
    async with client.ws_connect("/api/orders/stream", params=params) as ws:
        ids = [await post_order(client) for _ in range(count)]
        usdc = await post_order(client, tokenIn="USDC", tokenOut="SOL", amount=100)
        ids.append(usdc)
        await watch(client, usdc)
        for order_id in ids[:-1]:
            await watch(client, order_id)
        async with asyncio.timeout(10):
            while True:
                message = await ws.receive_json()
                events.append(message)
                if message.get("orderId") == usdc and message["status"] in ("confirmed", "failed"):
                    break
    return events, ids


async def test_firehose_streams_every_event_of_every_order(
    client: TestClient[Any, Application],
) -> None:
    doc = await document(client)
    events, ids = await firehose(client, 3)
    by_order: dict[str, list[int]] = defaultdict(list)
    for event in events:
        check_message(doc, "OrderEvent", event)
        by_order[event["orderId"]].append(event["seq"])
    assert set(by_order) == set(ids)
    for seqs in by_order.values():
        assert seqs == list(range(1, len(seqs) + 1))


async def test_firehose_filters_by_status_and_pair(client: TestClient[Any, Application]) -> None:
    confirmed, ids = await firehose(client, 2, status="confirmed")
    assert {e["status"] for e in confirmed} == {"confirmed"}
    assert {e["orderId"] for e in confirmed} == set(ids)
    usdc_only, ids = await firehose(client, 2, tokenIn="USDC")
    assert {e["orderId"] for e in usdc_only} == {ids[-1]}


async def test_firehose_refuses_bad_filters(client: TestClient[Any, Application]) -> None:
    async with client.ws_connect("/api/orders/stream?status=nope") as ws:
        message = await ws.receive_json()
        assert message["error"]["code"] == "invalid_status"
        await ws.receive()
        assert ws.close_code == 1008
