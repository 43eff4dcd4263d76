"""The OpenAPI document describes every endpoint, and real responses match it."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from tests.support.clients import post_order, services, watch


async def document(client: TestClient[Any, Application]) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


def validator(doc: dict[str, Any], ref: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # The document is the root resource, so "#/components/schemas/..." refs resolve in it.
    return jsonschema.Draft202012Validator({**doc, **ref})


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    response = doc["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    validator(doc, schema).validate(body)


def check_message(doc: dict[str, Any], name: str, message: Any) -> None:
    validator(doc, {"$ref": f"#/components/schemas/{name}"}).validate(message)


async def test_document_is_openapi_31_with_valid_schemas(
    client: TestClient[Any, Application],
) -> None:
    doc = await document(client)
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


async def test_every_route_is_documented(client: TestClient[Any, Application]) -> None:
    doc = await document(client)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in client.server.app.router.routes():
        path = re.sub(r"\{order_id\}", "{orderId}", route.resource.canonical)  # type: ignore[union-attr]
        if route.method != "HEAD":
            served.add((path, route.method))
    assert served == documented


async def test_submit_responses_match(client: TestClient[Any, Application]) -> None:
    doc = await document(client)
    ok = await client.post(
        "/api/order/execute", json={"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1}
    )
    check(doc, "/api/order/execute", "post", 201, await ok.json())
    bad = await client.post("/api/order/execute", json={"tokenIn": "SOL"})
    check(doc, "/api/order/execute", "post", 400, await bad.json())
    text = await client.post("/api/order/execute", data="x", headers={"Content-Type": "text/plain"})
    check(doc, "/api/order/execute", "post", 415, await text.json())
    big = await client.post(
        "/api/order/execute", data="x" * 20_000, headers={"Content-Type": "application/json"}
    )
    check(doc, "/api/order/execute", "post", 413, await big.json())
    key = {"Idempotency-Key": "k1"}
    body = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1}
    first = await client.post("/api/order/execute", json=body, headers=key)
    again = await client.post("/api/order/execute", json=body, headers=key)
    other = await client.post("/api/order/execute", json={**body, "amount": 2}, headers=key)
    assert (first.status, again.status, other.status) == (201, 200, 422)
    check(doc, "/api/order/execute", "post", 200, await again.json())
    check(doc, "/api/order/execute", "post", 422, await other.json())
    assert (await again.json())["orderId"] == (await first.json())["orderId"]


@pytest.mark.parametrize("drops", [0, 3], ids=["confirmed", "failed"])
async def test_streamed_events_and_order_detail_match(
    client: TestClient[Any, Application], drops: int
) -> None:
    doc = await document(client)
    services(client).market.chain.drop_next(drops)
    order_id = await post_order(client)
    events = await watch(client, order_id)
    for message in events:
        check_message(doc, "OrderEvent", message)
    detail = await client.get(f"/api/order/{order_id}")
    check(doc, "/api/order/{orderId}", "get", 200, await detail.json())
    missing = await client.get("/api/order/00000000-0000-4000-8000-000000000000")
    check(doc, "/api/order/{orderId}", "get", 404, await missing.json())


async def test_split_order_events_match(client: TestClient[Any, Application]) -> None:
    doc = await document(client)
    order_id = await post_order(client, amount=20_000)
    events = await watch(client, order_id)
    building = next(e for e in events if e["status"] == "building")
    assert len(building["data"]["legs"]) == 2, building
    for message in events:
        check_message(doc, "OrderEvent", message)


async def test_health_responses_match(client: TestClient[Any, Application]) -> None:
    doc = await document(client)
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        check(doc, path, "get", 200, await resp.json())
