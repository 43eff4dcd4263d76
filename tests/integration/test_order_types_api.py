"""The HTTP and WebSocket surface of order types: limit and sniper fields, websocketUrl,
cancelling (DELETE), the plural order path, the execute WebSocket as a status stream, and
GET /api/stats, through a real server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.api.auth import new_key
from order_engine.app import build_app
from order_engine.orders import Order, OrderEvent, OrderType, Status
from order_engine.venues import SimulatedMarket
from tests.integration.test_openapi import check, check_message, document
from tests.support.clients import post_order, read_until_closed, services, watch
from tests.support.factories import ORDER, make_settings
from tests.support.proxy import TcpProxy
from tests.support.services import postgres_behind_proxy

JSON = {"Content-Type": "application/json"}
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
# A limit far above the market (SOL is about 150 USDC): armed until cancelled or expired.
LIMIT = {**ORDER, "orderType": "limit", "limitPrice": "1000000"}
SNIPER = {"tokenIn": "SOL", "tokenOut": "BONK", "amount": 1, "orderType": "sniper"}
MAX_EXPIRY_S = 604_800
WAIT_S = 10.0

Client = TestClient[Any, Application]


async def post(client: Client, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    resp = await client.post("/api/order/execute", json=body, headers=headers)
    return resp.status, await resp.json()


async def submit(client: Client, body: dict[str, Any], **headers: str) -> str:
    status, reply = await post(client, body, **headers)
    assert status == 201, reply
    order_id: str = reply["orderId"]
    return order_id


async def until_status(ws: ClientWebSocketResponse, status: str) -> list[dict[str, Any]]:
    """The events received up to and including the first with `status`."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_S):
        while not seen or seen[-1]["status"] != status:
            seen.append(await ws.receive_json())
    return seen


async def armed(client: Client, body: dict[str, Any] = LIMIT, **headers: str) -> str:
    """A limit order, once it is open (armed): stored, and in the engine's book."""
    order_id = await submit(client, body, **headers)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}", headers=headers) as ws:
        await until_status(ws, "open")
    return order_id


# -- validation ------------------------------------------------------------------------

IN_A_DAY = time.time() + 86_400
CASES = [
    # (body, code, field)
    ({**ORDER, "orderType": "stop"}, "invalid_order_type", "orderType"),
    ({**ORDER, "orderType": 1}, "invalid_order_type", "orderType"),
    ({**ORDER, "orderType": "LIMIT", "limitPrice": 1}, "invalid_order_type", "orderType"),
    ({**ORDER, "orderType": "limit"}, "missing_field", "limitPrice"),
    ({**ORDER, "limitPrice": "150"}, "field_not_allowed", "limitPrice"),
    ({**ORDER, "orderType": "market", "limitPrice": "150"}, "field_not_allowed", "limitPrice"),
    ({**ORDER, "expiresIn": 60}, "field_not_allowed", "expiresIn"),
    ({**ORDER, "expiresAt": IN_A_DAY}, "field_not_allowed", "expiresAt"),
    ({**LIMIT, "minLiquidity": 1}, "field_not_allowed", "minLiquidity"),
    ({**ORDER, "minLiquidity": 1}, "field_not_allowed", "minLiquidity"),
    ({**LIMIT, "limitPrice": 0}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": "0.000"}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": -150}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": "-150"}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": "1e3"}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": "abc"}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": ""}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": "1." + "0" * 29 + "1"}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": "0." + "0" * 30 + "1"}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": "1" + "0" * 31}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "limitPrice": True}, "invalid_type", "limitPrice"),
    ({**LIMIT, "limitPrice": [150]}, "invalid_type", "limitPrice"),
    ({**SNIPER, "limitPrice": 0}, "invalid_limit_price", "limitPrice"),
    ({**LIMIT, "expiresIn": 0}, "invalid_expiry", "expiresIn"),
    ({**LIMIT, "expiresIn": -60}, "invalid_expiry", "expiresIn"),
    ({**LIMIT, "expiresIn": "60"}, "invalid_expiry", "expiresIn"),
    ({**LIMIT, "expiresIn": MAX_EXPIRY_S + 1}, "invalid_expiry", "expiresIn"),
    ({**LIMIT, "expiresAt": 1_000_000}, "invalid_expiry", "expiresAt"),
    ({**LIMIT, "expiresAt": "2001-01-01T00:00:00Z"}, "invalid_expiry", "expiresAt"),
    ({**LIMIT, "expiresAt": IN_A_DAY + MAX_EXPIRY_S}, "invalid_expiry", "expiresAt"),
    ({**LIMIT, "expiresAt": "2999-01-01T00:00:00+00:00"}, "invalid_expiry", "expiresAt"),
    ({**LIMIT, "expiresAt": "2030-01-01T00:00:00"}, "invalid_expiry", "expiresAt"),  # no zone
    ({**LIMIT, "expiresAt": "tomorrow"}, "invalid_expiry", "expiresAt"),
    ({**LIMIT, "expiresAt": True}, "invalid_expiry", "expiresAt"),
    ({**LIMIT, "expiresIn": 60, "expiresAt": IN_A_DAY}, "invalid_expiry", "expiresAt"),
    ({**LIMIT, "expiresAt": IN_A_DAY, "expiresIn": 60}, "invalid_expiry", "expiresIn"),
    ({**SNIPER, "expiresIn": 0}, "invalid_expiry", "expiresIn"),
    ({**SNIPER, "minLiquidity": 0}, "invalid_min_liquidity", "minLiquidity"),
    ({**SNIPER, "minLiquidity": "-1"}, "invalid_min_liquidity", "minLiquidity"),
    ({**SNIPER, "minLiquidity": "0.0000000001"}, "invalid_min_liquidity", "minLiquidity"),
    ({**SNIPER, "minLiquidity": "abc"}, "invalid_min_liquidity", "minLiquidity"),
    ({**SNIPER, "minLiquidity": 1e40}, "invalid_min_liquidity", "minLiquidity"),
    ({**SNIPER, "minLiquidity": [1]}, "invalid_type", "minLiquidity"),
    ({**SNIPER, "tokenOut": "NOPE"}, "unknown_token", "tokenOut"),
    # An upcoming token (listed, no pool yet) is a sniper's target only.
    ({**ORDER, "tokenOut": "WOOF"}, "unknown_token", "tokenOut"),
    ({**LIMIT, "tokenOut": "WOOF"}, "unknown_token", "tokenOut"),
    ({**SNIPER, "tokenIn": "WOOF"}, "unknown_token", "tokenIn"),
    # More digits than Decimal's default context keeps: refused, never rounded away.
    ({**ORDER, "amount": "1." + "0" * 28 + "1"}, "too_many_decimals", "amount"),
    ({**SNIPER, "minLiquidity": "1." + "0" * 28 + "1"}, "invalid_min_liquidity", "minLiquidity"),
]


@pytest.mark.parametrize(("body", "code", "field"), CASES)
async def test_order_type_fields_are_validated(
    client: Client, body: dict[str, Any], code: str, field: str
) -> None:
    status, reply = await post(client, body)
    assert status == 400, reply
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["field"] == field
    assert reply["error"]["message"]


async def test_every_unknown_field_is_named_at_once(client: Client) -> None:
    status, reply = await post(client, {**ORDER, "limitprice": 1, "expires": 60, "x": None})
    assert status == 400
    error = reply["error"]
    assert error["code"] == "unknown_field"
    assert error["field"] == "limitprice"
    for name in ("limitprice", "expires", "x"):
        assert repr(name) in error["message"], error


async def test_nothing_is_stored_for_a_refused_limit_order(client: Client) -> None:
    await post(client, {**LIMIT, "limitPrice": 0})
    assert await services(client).store.count_by_status() == {}


# -- accepted orders ---------------------------------------------------------------------


async def stored(client: Client, order_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/order/{order_id}")
    assert resp.status == 200
    order: dict[str, Any] = (await resp.json())["order"]
    return order


async def test_a_limit_order_keeps_its_terms(client: Client) -> None:
    before = time.time()
    order_id = await submit(client, {**LIMIT, "limitPrice": "150000.50", "expiresIn": 600})
    order = await stored(client, order_id)
    assert order["orderType"] == "limit"
    assert order["limitPrice"] == "150000.5"  # exact, in plain form
    assert before + 600 <= order["expiresAt"] <= time.time() + 600
    assert order["minLiquidity"] is None


async def test_expiry_may_be_an_iso_time_or_epoch_seconds_or_the_default(client: Client) -> None:
    at = datetime.fromtimestamp(int(time.time()) + 3_600, UTC)
    iso = await submit(client, {**LIMIT, "expiresAt": at.isoformat()})
    assert (await stored(client, iso))["expiresAt"] == at.timestamp()
    epoch = await submit(client, {**LIMIT, "expiresAt": at.timestamp() + 0.5})
    assert (await stored(client, epoch))["expiresAt"] == at.timestamp() + 0.5
    default = await stored(client, await submit(client, LIMIT))
    default_s = services(client).settings.orders.default_expiry_s
    assert abs(default["expiresAt"] - default["createdAt"] - default_s) < 1


async def test_a_market_order_says_so(client: Client) -> None:
    order = await stored(client, await post_order(client))
    assert order["orderType"] == "market"
    assert (order["limitPrice"], order["expiresAt"], order["minLiquidity"]) == (None,) * 3
    explicit = await stored(client, await post_order(client, orderType="market"))
    assert explicit["orderType"] == "market"


async def test_an_order_for_an_upcoming_token_reads_back(client: Client) -> None:
    """A sniper order names a token before it trades: reading it (the order, the history
    filtered by that token) must not depend on the token being tradable."""
    now = time.time()
    order = Order(
        order_id=str(uuid.uuid4()),
        token_in="SOL",
        token_out="WOOF",
        amount=10**9,
        slippage_bps=50,
        status=Status.PENDING,
        last_seq=1,
        attempts=0,
        created_at=now,
        updated_at=now,
        order_type=OrderType.SNIPER,
        expires_at=now + 60,
        min_liquidity=5 * 10**9,
    )
    first = OrderEvent(order.order_id, 1, Status.PENDING, "queued", now, {})
    # Stored as this replica's own order, which its engine took on at start-up only: the
    # engine leaves it alone, the API reads it.
    await services(client).store.create(order, first, owned=True)
    detail = await stored(client, order.order_id)
    assert (detail["tokenOut"], detail["orderType"], detail["minLiquidity"]) == (
        "WOOF",
        "sniper",
        "5",
    )
    page = await client.get("/api/orders?tokenOut=WOOF")
    assert [o["orderId"] for o in (await page.json())["orders"]] == [order.order_id]


# -- websocketUrl and idempotency -----------------------------------------------------


async def test_the_answer_points_to_the_status_stream(client: Client) -> None:
    key = {"Idempotency-Key": "ws-url"}
    status, created = await post(client, ORDER, **key)
    assert status == 201
    order_id = created["orderId"]
    assert created["websocketUrl"] == f"/api/order/status?orderId={order_id}"
    status, replayed = await post(client, ORDER, **key)
    assert status == 200
    assert replayed["websocketUrl"] == created["websocketUrl"]
    async with client.ws_connect(created["websocketUrl"]) as ws:
        events = await read_until_closed(ws)
        assert ws.close_code == 1000
    assert [e["orderId"] for e in events] == [order_id] * len(events)
    assert events[-1]["status"] == "confirmed"


@pytest.mark.parametrize(
    "change",
    [
        {"limitPrice": "1000001"},
        {"expiresIn": 601},
        {"orderType": "sniper", "tokenOut": "USDC"},
    ],
    ids=["limit-price", "expiry", "order-type"],
)
async def test_an_idempotency_key_covers_the_order_terms(
    client: Client, change: dict[str, Any]
) -> None:
    key = {"Idempotency-Key": "terms"}
    body = {**LIMIT, "expiresIn": 600}
    status, first = await post(client, body, **key)
    assert status == 201
    status, again = await post(client, body, **key)
    assert (status, again["orderId"]) == (200, first["orderId"])
    assert again["websocketUrl"] == first["websocketUrl"]
    status, other = await post(client, {**body, **change}, **key)
    assert status == 422, other
    assert other["error"]["code"] == "idempotency_key_reused"


async def test_equal_limit_prices_are_the_same_request(client: Client) -> None:
    key = {"Idempotency-Key": "same-price"}
    status, first = await post(client, {**LIMIT, "limitPrice": 1000000}, **key)
    assert status == 201
    status, again = await post(client, {**LIMIT, "limitPrice": "1000000.00"}, **key)
    assert (status, again["orderId"]) == (200, first["orderId"])


# -- reading an order through either path -------------------------------------------------


async def test_the_plural_order_path_is_the_singular_one(client: Client) -> None:
    order_id = await post_order(client)
    await watch(client, order_id)
    singular = await client.get(f"/api/order/{order_id}")
    plural = await client.get(f"/api/orders/{order_id}")
    assert plural.status == singular.status == 200
    assert await plural.json() == await singular.json()
    missing = await client.get(f"/api/orders/{UNKNOWN_ID}")
    assert missing.status == 404
    malformed = await client.get("/api/orders/not-a-uuid")
    assert (await malformed.json())["error"]["code"] == "invalid_order_id"


async def test_the_static_order_paths_still_win(client: Client) -> None:
    """/api/orders/stream and /api/orders/execute are not order ids."""
    for path in ("/api/orders/stream", "/api/orders/execute"):
        resp = await client.get(path)  # not an Upgrade request
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "websocket_required", path
    async with client.ws_connect("/api/orders/stream") as firehose:
        order_id = await post_order(client)
        first = await firehose.receive_json(timeout=WAIT_S)
        assert (first["orderId"], first["status"]) == (order_id, "pending")
    resp = await client.post("/api/orders/execute", json=ORDER)
    assert resp.status == 201


# -- the execute WebSocket as a status stream ---------------------------------------------


async def test_the_execute_websocket_streams_an_order_given_its_id(client: Client) -> None:
    order_id = await post_order(client)
    expected = await watch(client, order_id)
    async with client.ws_connect(f"/api/orders/execute?orderId={order_id}") as ws:
        assert await read_until_closed(ws) == expected
        assert ws.close_code == 1000
    async with client.ws_connect(f"/api/orders/execute?orderId={order_id}&after=2") as ws:
        assert await read_until_closed(ws) == expected[2:]
        assert ws.close_code == 1000


@pytest.mark.parametrize(
    ("query", "code", "close"),
    [
        ("orderId=nope", "invalid_order_id", 1008),
        (f"orderId={UNKNOWN_ID}", "order_not_found", 4404),
        (f"orderId={UNKNOWN_ID}&after=x", "invalid_after", 1008),
    ],
)
async def test_the_execute_websocket_refuses_a_bad_order_id_as_the_status_stream_does(
    client: Client, query: str, code: str, close: int
) -> None:
    async with client.ws_connect(f"/api/orders/execute?{query}") as ws:
        messages = await read_until_closed(ws)
        assert ws.close_code == close
    assert [m["error"]["code"] for m in messages] == [code]


async def test_the_execute_websocket_answer_carries_the_websocket_url(client: Client) -> None:
    async with client.ws_connect("/api/orders/execute") as ws:
        await ws.send_json(ORDER)
        accepted = await ws.receive_json(timeout=WAIT_S)
        events = await read_until_closed(ws)
    assert accepted["websocketUrl"] == f"/api/order/status?orderId={accepted['orderId']}"
    assert events[-1]["status"] == "confirmed"


# -- cancelling ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/order", "/api/orders"])
async def test_cancelling_an_open_order_ends_its_stream(client: Client, path: str) -> None:
    order_id = await submit(client, LIMIT)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        history = await until_status(ws, "open")
        resp = await client.delete(f"{path}/{order_id}")
        assert resp.status == 200
        order = await resp.json()
        rest = await read_until_closed(ws)
        assert ws.close_code == 1000
    assert (order["orderId"], order["status"], order["orderType"]) == (
        order_id,
        "cancelled",
        "limit",
    )
    assert [e["status"] for e in history + rest] == ["pending", "open", "cancelled"]
    assert rest[-1]["data"] == {"previous": "open"}
    detail = await client.get(f"/api/order/{order_id}")
    assert (await detail.json())["order"] == order


async def test_an_order_cancelled_as_soon_as_it_is_accepted_is_cancelled(client: Client) -> None:
    """Pending or already open: either way it is cancelled, and never executes."""
    order_id = await submit(client, LIMIT)
    resp = await client.delete(f"/api/order/{order_id}")
    assert resp.status == 200
    events = await watch(client, order_id)
    assert events[-1]["status"] == "cancelled"
    assert events[-1]["data"]["previous"] in {"pending", "open"}
    assert not {"routing", "submitted"} & {e["status"] for e in events}


async def test_an_executed_order_is_not_cancellable(client: Client) -> None:
    order_id = await post_order(client)
    await watch(client, order_id)
    for path in ("/api/order", "/api/orders"):
        resp = await client.delete(f"{path}/{order_id}")
        assert resp.status == 409
        error = (await resp.json())["error"]
        assert (error["code"], error["status"]) == ("not_cancellable", "confirmed")
    again = await client.delete(f"/api/order/{await armed(client)}")
    assert again.status == 200
    twice = await client.delete(f"/api/order/{(await again.json())['orderId']}")
    assert (await twice.json())["error"]["status"] == "cancelled"


async def test_an_order_is_not_cancellable_once_its_execution_began(client: Client) -> None:
    chain = services(client).market.chain
    chain.hold()
    order_id = await post_order(client)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        await until_status(ws, "submitted")
        resp = await client.delete(f"/api/order/{order_id}")
        assert resp.status == 409
        assert (await resp.json())["error"]["status"] == "submitted"
        chain.release()
        rest = await read_until_closed(ws)
    assert rest[-1]["status"] == "confirmed"


async def test_cancelling_an_unknown_or_malformed_order(client: Client) -> None:
    for path in ("/api/order", "/api/orders"):
        missing = await client.delete(f"{path}/{UNKNOWN_ID}")
        assert missing.status == 404
        assert (await missing.json())["error"]["code"] == "order_not_found"
        malformed = await client.delete(f"{path}/not-a-uuid")
        assert malformed.status == 400
        assert (await malformed.json())["error"]["code"] == "invalid_order_id"


ALICE, ALICE_ENTRY = new_key("alice")
BOB, BOB_ENTRY = new_key("bob")


async def test_a_client_cancels_only_its_own_orders(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = make_settings(tmp_path, auth={"api_keys": (ALICE_ENTRY, BOB_ENTRY)})
    client: Client = await aiohttp_client(build_app(settings, market=market))
    order_id = await armed(client, **{"x-api-key": ALICE})
    theirs = await client.delete(f"/api/order/{order_id}", headers={"x-api-key": BOB})
    assert theirs.status == 404  # as a missing one: ids cannot be probed
    assert (await theirs.json())["error"]["code"] == "order_not_found"
    mine = await client.delete(f"/api/order/{order_id}", headers={"x-api-key": ALICE})
    assert mine.status == 200
    assert (await mine.json())["status"] == "cancelled"


# -- stats --------------------------------------------------------------------------------


async def stats(client: Client) -> dict[str, Any]:
    resp = await client.get("/api/stats")
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def test_stats_count_orders_by_status_and_type(client: Client) -> None:
    empty = await stats(client)
    assert empty == {
        "queueDepth": 0,
        "inFlight": 0,
        "held": 0,
        "openOrders": {"limit": 0, "sniper": 0},
        "byStatus": {s.value: 0 for s in Status},
    }
    await watch(client, await post_order(client))
    await armed(client)
    cancelled = await armed(client)
    assert (await client.delete(f"/api/order/{cancelled}")).status == 200
    body = await stats(client)
    assert body["openOrders"] == {"limit": 1, "sniper": 0}
    assert body["byStatus"] == {s.value: 0 for s in Status} | {
        "confirmed": 1,
        "open": 1,
        "cancelled": 1,
    }
    assert body["queueDepth"] == 0


async def test_stats_count_transactions_in_flight(client: Client) -> None:
    chain = services(client).market.chain
    chain.hold()
    order_id = await post_order(client)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        await until_status(ws, "submitted")
        body = await stats(client)
        assert (body["inFlight"], body["byStatus"]["submitted"]) == (1, 1)
        assert body["held"] == 1
        chain.release()
        await read_until_closed(ws)


# -- the store unavailable ----------------------------------------------------------------


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """PostgreSQL behind a proxy the test can cut."""
    async with postgres_behind_proxy() as p:
        yield p


async def test_cancel_and_stats_are_503_while_the_store_is_unreachable(
    aiohttp_client: Any, tmp_path: Path, proxy: TcpProxy, market: SimulatedMarket
) -> None:
    settings = make_settings(tmp_path, store={"url": proxy.url})  # type: ignore[attr-defined]
    client: Client = await aiohttp_client(build_app(settings, market=market))
    order_id = await armed(client)
    proxy.cut()
    for resp in (await client.delete(f"/api/order/{order_id}"), await client.get("/api/stats")):
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "store_unavailable"
        assert "Retry-After" in resp.headers
    proxy.restore()
    resp = await client.delete(f"/api/order/{order_id}")
    assert resp.status == 200
    assert (await stats(client))["byStatus"]["cancelled"] == 1


# -- the OpenAPI document describes these answers ------------------------------------------


async def test_the_answers_match_the_openapi_document(client: Client) -> None:
    doc = await document(client)
    status, accepted = await post(client, LIMIT)
    check(doc, "/api/order/execute", "post", status, accepted)
    status, refused = await post(client, {**ORDER, "limitPrice": 1, "typo": 1})
    check(doc, "/api/order/execute", "post", status, refused)
    order_id = await armed(client)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        await until_status(ws, "open")
        cancelled = await client.delete(f"/api/orders/{order_id}")
        check(doc, "/api/orders/{orderId}", "delete", 200, await cancelled.json())
        for message in await read_until_closed(ws):
            check_message(doc, "OrderEvent", message)
    too_late = await client.delete(f"/api/order/{order_id}")
    check(doc, "/api/order/{orderId}", "delete", 409, await too_late.json())
    missing = await client.delete(f"/api/order/{UNKNOWN_ID}")
    check(doc, "/api/order/{orderId}", "delete", 404, await missing.json())
    detail = await client.get(f"/api/orders/{order_id}")
    check(doc, "/api/orders/{orderId}", "get", 200, await detail.json())
    check(doc, "/api/stats", "get", 200, await stats(client))
