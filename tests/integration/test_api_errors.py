"""Every invalid input is refused with a 4xx, a stable code and the field at fault."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from tests.support.clients import post_order, read_until_closed, services

JSON = {"Content-Type": "application/json"}


async def refused(
    client: TestClient[Any, Application], body: bytes | str, status: int = 400, **headers: str
) -> dict[str, Any]:
    resp = await client.post("/api/order/execute", data=body, headers={**JSON, **headers})
    payload = await resp.json()
    assert resp.status == status, payload
    assert set(payload) == {"error"}
    return dict(payload["error"])


CASES = [
    # (body, code, field)
    ('{"tokenOut":"USDC","amount":1}', "missing_field", "tokenIn"),
    ('{"tokenIn":"SOL","amount":1}', "missing_field", "tokenOut"),
    ('{"tokenIn":"SOL","tokenOut":"USDC"}', "missing_field", "amount"),
    ('{"tokenIn":"DOGE","tokenOut":"USDC","amount":1}', "unknown_token", "tokenIn"),
    ('{"tokenIn":"SOL","tokenOut":"XYZ","amount":1}', "unknown_token", "tokenOut"),
    ('{"tokenIn":"SOL","tokenOut":"sol","amount":1}', "same_token", "tokenOut"),
    ('{"tokenIn":"SOL","tokenOut":"WSOL","amount":1}', "same_token", "tokenOut"),
    ('{"tokenIn":5,"tokenOut":"USDC","amount":1}', "invalid_type", "tokenIn"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":true}', "invalid_type", "amount"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":[1]}', "invalid_type", "amount"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":-1}', "invalid_amount", "amount"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":0}', "invalid_amount", "amount"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":"-1"}', "invalid_amount", "amount"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":"1e3"}', "invalid_amount", "amount"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":"abc"}', "invalid_amount", "amount"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":""}', "invalid_amount", "amount"),
    ('{"tokenIn":"USDC","tokenOut":"SOL","amount":1.0000001}', "too_many_decimals", "amount"),
    ('{"tokenIn":"BONK","tokenOut":"SOL","amount":"0.000001"}', "too_many_decimals", "amount"),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":1e309}', "amount_too_large", "amount"),
    (
        '{"tokenIn":"SOL","tokenOut":"USDC","amount":1' + "0" * 10_000 + "}",
        "amount_too_large",
        "amount",
    ),
    ('{"tokenIn":"SOL","tokenOut":"USDC","amount":20000000000}', "amount_too_large", "amount"),
    (
        '{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippageBps":5001}',
        "invalid_slippage",
        "slippageBps",
    ),
    (
        '{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippageBps":-1}',
        "invalid_slippage",
        "slippageBps",
    ),
    (
        '{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippageBps":1.5}',
        "invalid_slippage",
        "slippageBps",
    ),
    (
        '{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slippageBps":"50"}',
        "invalid_slippage",
        "slippageBps",
    ),
    (
        '{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"clientOrderId":""}',
        "invalid_client_order_id",
        "clientOrderId",
    ),
    (
        '{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"clientOrderId":"' + "x" * 65 + '"}',
        "invalid_client_order_id",
        "clientOrderId",
    ),
    (
        '{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"slipageBps":10}',
        "unknown_field",
        "slipageBps",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), CASES)
async def test_invalid_order_is_refused_with_its_code(
    client: TestClient[Any, Application], body: str, code: str, field: str
) -> None:
    error = await refused(client, body)
    assert error["code"] == code, error
    assert error["field"] == field
    assert error["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"tokenIn":"SOL","tokenOut":"USDC","amount":NaN}',
        b'{"tokenIn":"SOL","tokenOut":"USDC","amount":Infinity}',
        b'{"tokenIn":"SOL","tokenIn":"SOL","tokenOut":"USDC","amount":1}',
        b'{"tokenIn":"\xff","tokenOut":"USDC","amount":1}',
        b"[" * 5_000 + b"]" * 5_000,
    ],
    ids=["empty", "truncated", "nan", "infinity", "duplicate-key", "invalid-utf8", "deep"],
)
async def test_malformed_json_is_refused(client: TestClient[Any, Application], body: bytes) -> None:
    error = await refused(client, body)
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize("body", [b"[]", b"1", b'"order"', b"null"])
async def test_body_must_be_an_object(client: TestClient[Any, Application], body: bytes) -> None:
    error = await refused(client, body)
    assert error["code"] == "invalid_body"


async def test_wrong_content_type_is_415(client: TestClient[Any, Application]) -> None:
    resp = await client.post(
        "/api/order/execute",
        data='{"tokenIn":"SOL","tokenOut":"USDC","amount":1}',
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_media_type"


async def test_body_too_large_is_413(client: TestClient[Any, Application]) -> None:
    padding = "x" * 20_000
    error = await refused(
        client, '{"tokenIn":"SOL","tokenOut":"USDC","amount":1,"p":"' + padding + '"}', 413
    )
    assert error["code"] == "body_too_large"


async def test_nothing_is_stored_for_a_refused_order(client: TestClient[Any, Application]) -> None:
    await refused(client, '{"tokenIn":"SOL","tokenOut":"SOL","amount":1}')
    assert await services(client).store.unfinished() == []


async def test_mint_addresses_and_decimal_strings_are_accepted(
    client: TestClient[Any, Application],
) -> None:
    order_id = await post_order(
        client,
        tokenIn="EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        tokenOut="bonk",
        amount="12.345678",
    )
    order = await services(client).store.get(order_id)
    assert order is not None
    assert (order.token_in, order.token_out, order.amount) == ("USDC", "BONK", 12_345_678)


async def test_unknown_order_over_http_is_404(client: TestClient[Any, Application]) -> None:
    resp = await client.get(f"/api/order/{uuid.uuid4()}")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "order_not_found"
    resp = await client.get("/api/order/not-a-uuid")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_order_id"


async def test_unknown_path_is_json_404(client: TestClient[Any, Application]) -> None:
    resp = await client.get("/api/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("query", "close_code", "error_code"),
    [
        ("", 1008, "missing_field"),
        ("?orderId=12345", 1008, "invalid_order_id"),
        (f"?orderId={uuid.uuid4()}&after=-1", 1008, "invalid_after"),
        (f"?orderId={uuid.uuid4()}", 4404, "order_not_found"),
    ],
)
async def test_websocket_refusals(
    client: TestClient[Any, Application], query: str, close_code: int, error_code: str
) -> None:
    async with client.ws_connect(f"/api/order/status{query}") as ws:
        messages = await read_until_closed(ws)
        assert ws.close_code == close_code
    assert [m["error"]["code"] for m in messages] == [error_code]


async def test_websocket_submit_with_invalid_order(client: TestClient[Any, Application]) -> None:
    async with client.ws_connect("/api/orders/execute") as ws:
        await ws.send_str('{"tokenIn":"SOL","tokenOut":"SOL","amount":1}')
        messages = await read_until_closed(ws)
        assert ws.close_code == 1008
    assert messages == [
        {
            "error": {
                "code": "same_token",
                "message": messages[0]["error"]["message"],
                "field": "tokenOut",
            }
        }
    ]
