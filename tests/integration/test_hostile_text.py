"""Text a database cannot store (a lone surrogate, NUL) is refused at the edge, alone: it
never reaches the store, and a write that does anyway cannot take its batch down with it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.api.auth import new_key
from order_engine.app import build_app
from order_engine.config import Settings
from order_engine.orders import Order, OrderEvent, Status, Transition
from order_engine.store import Store, StoreError, store_from_url
from order_engine.venues import SimulatedMarket
from tests.support.clients import read_until_closed, services
from tests.support.factories import make_settings
from tests.support.services import postgres_schema

JSON = {"Content-Type": "application/json"}
SURROGATE = "\\ud800"  # as JSON spells it: a lone surrogate once parsed
NUL = "a\\u0000b"


def order_body(**fields: str) -> str:
    """An order as raw JSON, so escapes reach the server exactly as written."""
    extra = "".join(f',"{name}":"{value}"' for name, value in fields.items())
    return '{"tokenIn":"SOL","tokenOut":"USDC","amount":"1"' + extra + "}"


@pytest.fixture(params=["sqlite", "postgres"])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    """The `client` fixture's server, over each store."""
    if request.param == "sqlite":
        yield make_settings(tmp_path)
        return
    async with postgres_schema() as url:
        yield make_settings(tmp_path, store={"url": url})


@pytest.fixture
async def sqlite_client(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> TestClient[Any, Application]:
    """A server over SQLite only, for refusals that never reach the store."""
    result: TestClient[Any, Application] = await aiohttp_client(
        build_app(make_settings(tmp_path / "sqlite-only"), market=market)
    )
    return result


async def post(client: TestClient[Any, Application], body: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/order/execute", data=body, headers=JSON)
    payload: dict[str, Any] = await resp.json()
    return resp.status, payload


async def test_hostile_posters_cannot_fail_honest_orders(
    client: TestClient[Any, Application],
) -> None:
    honest = [order_body(clientOrderId=f"honest-{n}") for n in range(16)]
    hostile = [order_body(clientOrderId=SURROGATE)] * 3 + [order_body(clientOrderId=NUL)]
    answers = await asyncio.gather(*(post(client, body) for body in [*hostile, *honest]))
    for status, payload in answers[: len(hostile)]:
        assert status == 400, payload
        assert payload["error"]["code"] == "invalid_text", payload
        assert payload["error"]["field"] == "clientOrderId", payload
    for status, payload in answers[len(hostile) :]:
        assert status == 201, payload
    store = services(client).store
    for _, payload in answers[len(hostile) :]:
        assert await store.get(payload["orderId"]) is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order_body(clientOrderId=SURROGATE), "clientOrderId"),
        (order_body(clientOrderId=NUL), "clientOrderId"),
        ('{"tokenIn":"SOL\\u0000","tokenOut":"USDC","amount":"1"}', "tokenIn"),
        ('{"tokenIn":"SOL","tokenOut":"\\udfffUSDC","amount":"1"}', "tokenOut"),
        ('{"tokenIn":"SOL","tokenOut":"USDC","amount":"1\\u0000"}', "amount"),
        # The field NAME is the bad text: the answer names it escaped, as it can be sent.
        ('{"tokenIn":"SOL","tokenOut":"USDC","amount":"1","\\ud800":1}', "\\ud800"),
        ('{"tokenIn":"SOL","tokenOut":"USDC","amount":"1","a\\u0000":1}', "a\\x00"),
    ],
    ids=[
        "client-order-id-surrogate",
        "client-order-id-nul",
        "token-in-nul",
        "token-out-surrogate",
        "amount-nul",
        "field-name-surrogate",
        "field-name-nul",
    ],
)
async def test_bad_text_in_the_body_is_400_naming_the_field(
    sqlite_client: TestClient[Any, Application], body: str, field: str
) -> None:
    status, payload = await post(sqlite_client, body)
    assert status == 400, payload
    assert payload["error"]["code"] == "invalid_text"
    assert payload["error"]["field"] == field
    assert await services(sqlite_client).store.unfinished() == []


async def raw_request(
    client: TestClient[Any, Application], head: bytes, body: bytes = b""
) -> tuple[int, dict[str, Any] | None]:
    """One request written byte for byte (no client library sends such headers), and its
    answer: the status and its JSON body (None: it upgraded, or answered no JSON)."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        if b"\r\nConnection:" not in head:
            head += b"Connection: close\r\n"
        writer.write(head + b"Host: test\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            status = int(status_line.split()[1])
            if status == 101:
                return status, None
            payload = await reader.readexactly(length)
    finally:
        writer.close()
    try:
        loaded: dict[str, Any] = json.loads(payload)
    except ValueError:  # not JSON: an error page, shown by the status alone
        return status, None
    return status, loaded


UPGRADE = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


def assert_invalid_text(answer: tuple[int, dict[str, Any] | None], field: str) -> None:
    status, payload = answer
    assert status == 400, (status, payload)
    assert payload is not None
    assert payload["error"]["code"] == "invalid_text", payload
    assert payload["error"]["field"] == field, payload


@pytest.mark.parametrize(
    ("target", "field"),
    [
        (b"/api/orders?tokenIn=SOL%00", "tokenIn"),
        (b"/api/orders?limit=1&x%00=1", "x\\x00"),
        (b"/api/market?x=%00", "x"),
        (b"/api/order/%00", "orderId"),
    ],
    ids=["history-value", "history-name", "market", "path"],
)
async def test_bad_text_in_the_url_is_400_naming_the_parameter(
    sqlite_client: TestClient[Any, Application], target: bytes, field: str
) -> None:
    head = b"GET " + target + b" HTTP/1.1\r\n"
    assert_invalid_text(await raw_request(sqlite_client, head), field)


@pytest.mark.parametrize(
    ("query", "field"),
    [("orderId=%00", "orderId"), (f"orderId={uuid.uuid4()}&after=1%00", "after")],
    ids=["order-id", "after"],
)
async def test_bad_text_in_the_status_websocket_query_is_an_error_then_1008(
    sqlite_client: TestClient[Any, Application], query: str, field: str
) -> None:
    """Refused after the upgrade, as every malformed WebSocket request is."""
    async with sqlite_client.ws_connect(f"/api/order/status?{query}") as ws:
        messages = await read_until_closed(ws)
        assert ws.close_code == 1008
    assert [m["error"]["code"] for m in messages] == ["invalid_text"]
    assert messages[0]["error"]["field"] == field


async def test_idempotency_key_that_is_not_utf8_is_400(
    sqlite_client: TestClient[Any, Application],
) -> None:
    # Header bytes that are not UTF-8 reach the handler as lone surrogates.
    answer = await raw_request(
        sqlite_client,
        b"POST /api/order/execute HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: key-\xed\xa0\x80\r\n",
        order_body().encode(),
    )
    assert_invalid_text(answer, "Idempotency-Key")


@pytest.mark.parametrize("upgrade", [False, True], ids=["http", "websocket"])
async def test_api_key_that_is_not_utf8_is_400(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket, upgrade: bool
) -> None:
    """Refused before the upgrade on a WebSocket too, as a wrong key is."""
    _, entry = new_key("alice")
    settings = make_settings(tmp_path, auth={"api_keys": (entry,)})
    client: TestClient[Any, Application] = await aiohttp_client(build_app(settings, market=market))
    target = f"/api/order/status?orderId={uuid.uuid4()}".encode() if upgrade else b"/api/orders"
    head = b"GET " + target + b" HTTP/1.1\r\nX-Api-Key: \xff\xfe\r\n"
    answer = await raw_request(client, head + (UPGRADE if upgrade else b""))
    assert_invalid_text(answer, "x-api-key")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ('{"tokenIn":"SOL","tokenOut":"USDC","amount":"1","\\ud800":1}', "\\ud800"),
        (order_body(clientOrderId=SURROGATE), "clientOrderId"),
    ],
    ids=["field-name", "client-order-id"],
)
async def test_bad_text_on_the_execute_websocket_is_an_error_then_1008(
    sqlite_client: TestClient[Any, Application], message: str, field: str
) -> None:
    async with sqlite_client.ws_connect("/api/orders/execute") as ws:
        await ws.send_str(message)
        messages = await read_until_closed(ws)
        assert ws.close_code == 1008
    assert [m["error"]["code"] for m in messages] == ["invalid_text"]
    assert messages[0]["error"]["field"] == field


# -- the store: a write that cannot be stored fails alone ---------------------------------


def new_order(n: int, client_order_id: str | None = None) -> tuple[Order, OrderEvent]:
    order_id = f"00000000-0000-4000-8000-{n:012d}"
    order = Order(
        order_id=order_id,
        token_in="SOL",
        token_out="USDC",
        amount=10**9,
        slippage_bps=50,
        status=Status.PENDING,
        last_seq=1,
        attempts=0,
        created_at=1000.0 + n,
        updated_at=1000.0 + n,
        client_order_id=client_order_id,
    )
    return order, OrderEvent(order_id, 1, Status.PENDING, "queued", 1000.0 + n, {})


def routing(order_id: str, message: str = "routing", note: str = "ok") -> Transition:
    return Transition(OrderEvent(order_id, 2, Status.ROUTING, message, 2000.0, {"note": note}))


async def test_a_create_that_cannot_be_encoded_fails_alone(store: Store) -> None:
    good = [new_order(n, f"good-{n}") for n in range(8)]
    bad = new_order(99, "\ud800")
    # Queued in the same turn of the loop: the writer takes them as one batch.
    outcomes = await asyncio.gather(
        *(store.create(o, e) for o, e in good[:4]),
        store.create(*bad),
        *(store.create(o, e) for o, e in good[4:]),
        return_exceptions=True,
    )
    refused = outcomes.pop(4)
    assert outcomes == [None] * len(good)
    assert isinstance(refused, Exception) and not isinstance(refused, StoreError), refused
    for order, first in good:
        assert await store.get(order.order_id) == order
        assert await store.events(order.order_id) == [first]
    assert await store.get(bad[0].order_id) is None


@pytest.mark.parametrize("where", ["message", "data"])
async def test_an_append_that_cannot_be_encoded_fails_alone(store: Store, where: str) -> None:
    orders = [new_order(n) for n in range(6)]
    for order, first in orders:
        await store.create(order, first)
    bad_id = orders[2][0].order_id
    bad = routing(bad_id, **{"message" if where == "message" else "note": "\udfff"})
    outcomes = await asyncio.gather(
        *(store.append(bad if o.order_id == bad_id else routing(o.order_id)) for o, _ in orders),
        return_exceptions=True,
    )
    refused = outcomes.pop(2)
    assert outcomes == [None] * (len(orders) - 1)
    assert isinstance(refused, Exception) and not isinstance(refused, StoreError), refused
    for order, _ in orders:
        stored = await store.get(order.order_id)
        assert stored is not None
        assert stored.last_seq == (1 if order.order_id == bad_id else 2)


async def test_a_nul_postgres_cannot_store_fails_alone(tmp_path: Path) -> None:
    """SQLite stores NUL, PostgreSQL refuses it: on PostgreSQL it is the one bad write."""
    async with postgres_schema() as url:
        store = store_from_url(url)
        await store.open()
        try:
            good = [new_order(n, f"good-{n}") for n in range(4)]
            bad = new_order(50, "a\x00b")
            outcomes = await asyncio.gather(
                *(store.create(o, e) for o, e in good[:2]),
                store.create(*bad),
                *(store.create(o, e) for o, e in good[2:]),
                return_exceptions=True,
            )
            refused = outcomes.pop(2)
            assert outcomes == [None] * len(good)
            assert isinstance(refused, Exception) and not isinstance(refused, StoreError)
            for order, _ in good:
                assert await store.get(order.order_id) == order
            assert await store.get(bad[0].order_id) is None
        finally:
            await store.close()
