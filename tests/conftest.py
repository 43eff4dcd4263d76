"""Shared fixtures: settings for tests, a real server on a real port, real clients."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.app import SERVICES, Services, build_app
from order_engine.config import Settings
from order_engine.venues import SimulatedMarket
from order_engine.venues.profiles import PROFILES


def make_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    base = Settings().replace(
        store={"url": f"sqlite:///{tmp_path}/orders.db", "sqlite_synchronous": "NORMAL"},
        venues={"profile": "instant", "seed": 1},
        engine={
            "workers": 4,
            "retry_base_ms": 5.0,
            "retry_max_ms": 20.0,
            "quote_timeout_ms": 200.0,
        },
        server={"shutdown_grace_s": 2.0},
        websocket={"heartbeat_s": 5.0, "send_timeout_s": 2.0},
    )
    return base.replace(**sections) if sections else base


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def market() -> SimulatedMarket:
    return SimulatedMarket(PROFILES["instant"], seed=1)


@pytest.fixture
async def client(
    aiohttp_client: Any, settings: Settings, market: SimulatedMarket
) -> TestClient[Any, Application]:
    """A real server on a real port, with the instant market, and a client for it."""
    app = build_app(settings, market=market)
    result: TestClient[Any, Application] = await aiohttp_client(app)
    return result


def services(client: TestClient[Any, Application]) -> Services:
    return client.server.app[SERVICES]


ORDER = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1.5}


async def post_order(client: TestClient[Any, Application], **overrides: Any) -> str:
    resp = await client.post("/api/order/execute", json={**ORDER, **overrides})
    body = await resp.json()
    assert resp.status == 201, body
    order_id: str = body["orderId"]
    return order_id


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
