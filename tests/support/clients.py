"""Talking to a test server as its clients do: POST an order, watch it on a WebSocket."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.app import SERVICES, Services
from tests.support.factories import ORDER


def services(client: TestClient[Any, Application]) -> Services:
    """The running parts behind a test client's server."""
    return client.app[SERVICES]


async def post_order(client: TestClient[Any, Application], **overrides: Any) -> str:
    resp = await client.post("/api/order/execute", json={**ORDER, **overrides})
    body = await resp.json()
    assert resp.status == 201, body
    order_id: str = body["orderId"]
    return order_id


async def post_order_to(http: ClientSession, base: str, **overrides: Any) -> str:
    """`post_order` against a server in another process (`base`: its http://host:port)."""
    async with http.post(f"{base}/api/order/execute", json={**ORDER, **overrides}) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        order_id: str = body["orderId"]
        return order_id


async def until_submitted(
    http: ClientSession, base: str, order_id: str, timeout: float = 60
) -> str:
    """The order's signature, once it is `submitted` (stored; the engine sends it next)."""
    url = f"{base}/api/order/status?orderId={order_id}"
    async with asyncio.timeout(timeout), http.ws_connect(url) as ws:
        while True:
            event = await ws.receive_json()
            assert event["status"] not in ("confirmed", "failed"), event
            if event["status"] == "submitted":
                signature: str = event["data"]["txHash"]
                return signature


async def read_until_closed(
    ws: ClientWebSocketResponse, timeout: float = 10
) -> list[dict[str, Any]]:
    """Every message until the server closes; fails if it does not close in time."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for msg in ws:
            assert msg.type is WSMsgType.TEXT, msg
            messages.append(msg.json())
    return messages


async def watch(
    client: TestClient[Any, Application], order_id: str, after: int | None = None
) -> list[dict[str, Any]]:
    query = f"orderId={order_id}" + ("" if after is None else f"&after={after}")
    async with client.ws_connect(f"/api/order/status?{query}") as ws:
        messages = await read_until_closed(ws)
        assert ws.close_code == 1000, ws.close_code
    return messages


def assert_gap_free(events: list[dict[str, Any]], start: int = 1) -> None:
    assert [e["seq"] for e in events] == list(range(start, start + len(events)))
