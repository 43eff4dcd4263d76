"""A WebSocket handshake that is not valid is refused with 400 naming the header at fault,
on every WebSocket endpoint."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.app import build_app
from order_engine.venues import SimulatedMarket
from tests.support.factories import make_settings

ENDPOINTS = [
    "/api/orders/execute",
    f"/api/order/status?orderId={uuid.uuid4()}",
    "/api/orders/stream",
    "/api/session",
    "/api/market/stream",
]
VALID = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def without(name: str) -> dict[str, str]:
    return {k: v for k, v in VALID.items() if k != name}


CASES = [
    # (headers, code, field)
    (without("Sec-WebSocket-Key"), "missing_header", "Sec-WebSocket-Key"),
    ({**VALID, "Sec-WebSocket-Key": "c2hvcnQ="}, "invalid_header", "Sec-WebSocket-Key"),
    ({**VALID, "Sec-WebSocket-Key": "%%%"}, "invalid_header", "Sec-WebSocket-Key"),
    (without("Sec-WebSocket-Version"), "missing_header", "Sec-WebSocket-Version"),
    ({**VALID, "Sec-WebSocket-Version": "99"}, "invalid_header", "Sec-WebSocket-Version"),
    ({**VALID, "Connection": "keep-alive"}, "invalid_header", "Connection"),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("headers", "code", "field"),
    CASES,
    ids=["no-key", "short-key", "bad-key", "no-version", "bad-version", "no-connection-upgrade"],
)
async def test_a_bad_handshake_is_400_naming_the_header(
    client: TestClient[Any, Application], path: str, headers: dict[str, str], code: str, field: str
) -> None:
    resp = await client.get(path, headers=headers)
    error = (await resp.json())["error"]
    assert resp.status == 400, error
    assert (error["code"], error["field"]) == (code, field)
    assert field in error["message"]
    if field == "Sec-WebSocket-Version":  # RFC 6455 4.2.2: the version the server speaks
        assert resp.headers["Sec-WebSocket-Version"] == "13"


async def test_a_plain_get_is_still_told_to_upgrade(client: TestClient[Any, Application]) -> None:
    resp = await client.get("/api/orders/stream")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "websocket_required"


async def test_a_refused_handshake_leaves_the_clients_websocket_place_free(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = make_settings(tmp_path, limits={"websockets_per_client": 1})
    client = await aiohttp_client(build_app(settings, market=market))
    for _ in range(3):
        resp = await client.get("/api/orders/stream", headers=without("Sec-WebSocket-Key"))
        assert resp.status == 400
    async with client.ws_connect("/api/orders/stream") as ws:
        assert not ws.closed
