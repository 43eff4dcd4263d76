"""API keys, per-client scoping, rate limits, WebSocket caps, idempotency over time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from aiohttp.web import Application

from order_engine.api.auth import new_key
from order_engine.api.errors import ApiError
from order_engine.api.ratelimit import TokenBuckets, client_key
from order_engine.api.sockets import Connections
from order_engine.app import build_app
from order_engine.config import Settings
from order_engine.venues import SimulatedMarket
from tests.support.clients import read_until_closed, services
from tests.support.factories import ORDER, make_settings

ALICE, ALICE_ENTRY = new_key("alice")
BOB, BOB_ENTRY = new_key("bob")


async def serve(aiohttp_client: Any, settings: Settings, market: SimulatedMarket) -> Any:
    return await aiohttp_client(build_app(settings, market=market))


@pytest.fixture
async def authed(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> TestClient[Any, Application]:
    settings = make_settings(tmp_path, auth={"api_keys": (ALICE_ENTRY, BOB_ENTRY)})
    client: TestClient[Any, Application] = await serve(aiohttp_client, settings, market)
    return client


def as_(key: str) -> dict[str, str]:
    return {"x-api-key": key}


async def submit(client: TestClient[Any, Application], key: str, **extra: Any) -> Any:
    headers = as_(key) | extra.pop("headers", {})
    resp = await client.post("/api/order/execute", json={**ORDER, **extra}, headers=headers)
    return resp.status, await resp.json()


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}], ids=["missing", "wrong"])
async def test_every_endpoint_but_health_needs_a_key(
    authed: TestClient[Any, Application], headers: dict[str, str]
) -> None:
    for method, path in [
        ("POST", "/api/order/execute"),
        ("GET", "/api/order/00000000-0000-4000-8000-000000000000"),
        ("GET", "/api/openapi.json"),
    ]:
        resp = await authed.request(method, path, json=ORDER, headers=headers)
        assert resp.status == 401, path
        assert (await resp.json())["error"]["code"] == "unauthorized"
        assert "WWW-Authenticate" in resp.headers
    for path in ("/healthz", "/readyz"):
        assert (await authed.get(path)).status == 200
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await authed.ws_connect("/api/order/status?orderId=x", headers=headers)
    assert refused.value.status == 401


async def test_a_client_sees_only_its_own_orders(authed: TestClient[Any, Application]) -> None:
    status, body = await submit(authed, ALICE)
    assert status == 201
    order_id = body["orderId"]
    mine = await authed.get(f"/api/order/{order_id}", headers=as_(ALICE))
    assert mine.status == 200
    theirs = await authed.get(f"/api/order/{order_id}", headers=as_(BOB))
    missing = await authed.get("/api/order/00000000-0000-4000-8000-000000000000", headers=as_(BOB))
    assert theirs.status == missing.status == 404  # never 403: ids cannot be probed
    assert (await theirs.json())["error"]["code"] == (await missing.json())["error"]["code"]
    async with authed.ws_connect(f"/api/order/status?orderId={order_id}", headers=as_(BOB)) as ws:
        await read_until_closed(ws)
        assert ws.close_code == 4404
    # Browsers cannot set headers on a WebSocket: the key may come as a query parameter.
    async with authed.ws_connect(f"/api/order/status?orderId={order_id}&apiKey={ALICE}") as ws:
        events = await read_until_closed(ws)
    assert events[-1]["status"] == "confirmed"


async def test_idempotency_keys_and_client_order_ids_belong_to_their_client(
    authed: TestClient[Any, Application],
) -> None:
    key = {"Idempotency-Key": "same-key"}
    a = await submit(authed, ALICE, headers=key, clientOrderId="c-1")
    b = await submit(authed, BOB, headers=key, clientOrderId="c-1")
    assert (a[0], b[0]) == (201, 201)
    assert a[1]["orderId"] != b[1]["orderId"]
    again = await submit(authed, ALICE, clientOrderId="c-1")
    assert again[0] == 409
    assert again[1]["error"]["code"] == "duplicate_client_order_id"


async def test_client_order_ids_are_unique_without_auth(
    client: TestClient[Any, Application],
) -> None:
    first = await client.post("/api/order/execute", json={**ORDER, "clientOrderId": "x"})
    second = await client.post("/api/order/execute", json={**ORDER, "clientOrderId": "x"})
    assert (first.status, second.status) == (201, 409)
    assert (await second.json())["error"]["field"] == "clientOrderId"


async def test_requests_over_the_rate_are_429_with_retry_after(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    # A bucket of 3 that refills one token per 1000 s: the 4th request is refused.
    settings = make_settings(tmp_path, limits={"requests_per_s": 0.001, "burst": 3})
    client = await serve(aiohttp_client, settings, market)
    statuses = [(await client.post("/api/order/execute", json=ORDER)).status for _ in range(3)]
    assert statuses == [201, 201, 201]
    refused = await client.post("/api/order/execute", json=ORDER)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == "rate_limited"
    assert (await client.get("/healthz")).status == 200  # health is never limited


async def test_websockets_per_client_are_capped(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = make_settings(tmp_path, limits={"websockets_per_client": 2})
    client = await serve(aiohttp_client, settings, market)
    market.chain.hold()  # the order stays submitted: its watchers stay connected
    order_id = (await (await client.post("/api/order/execute", json=ORDER)).json())["orderId"]
    url = f"/api/order/status?orderId={order_id}"
    async with client.ws_connect(url), client.ws_connect(url):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(url)
        assert refused.value.status == 429
    market.chain.release()


def test_a_closed_or_refused_socket_gives_its_place_back() -> None:
    connections = Connections(per_client=1)
    connections.admit("ip:1")
    with pytest.raises(ApiError):
        connections.admit("ip:1")
    connections.release("ip:1")  # the upgrade failed
    connections.admit("ip:1")
    ws = web.WebSocketResponse()
    connections.add(ws, "ip:1")
    connections.discard(ws)  # closed
    connections.admit("ip:1")
    connections.admit("ip:2")  # another client has its own places


async def test_an_idempotency_key_replays_after_a_restart(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    key = {"Idempotency-Key": "restart-key"}
    first = await serve(aiohttp_client, make_settings(tmp_path), market)
    created = await first.post("/api/order/execute", json=ORDER, headers=key)
    order_id = (await created.json())["orderId"]
    await first.close()
    second = await serve(aiohttp_client, make_settings(tmp_path), market)
    replayed = await second.post("/api/order/execute", json=ORDER, headers=key)
    assert (created.status, replayed.status) == (201, 200)
    assert (await replayed.json())["orderId"] == order_id


async def test_an_expired_idempotency_key_may_be_used_again(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = make_settings(tmp_path, orders={"idempotency_ttl_s": 1e-6})
    client = await serve(aiohttp_client, settings, market)
    key = {"Idempotency-Key": "short-lived"}
    first = await client.post("/api/order/execute", json=ORDER, headers=key)
    second = await client.post("/api/order/execute", json=ORDER, headers=key)
    assert (first.status, second.status) == (201, 201)
    assert (await first.json())["orderId"] != (await second.json())["orderId"]


async def test_a_concurrent_duplicate_is_409_and_only_one_order_exists(
    client: TestClient[Any, Application],
) -> None:
    key = {"Idempotency-Key": "raced"}
    responses = await asyncio.gather(
        *(client.post("/api/order/execute", json=ORDER, headers=key) for _ in range(20))
    )
    statuses = [r.status for r in responses]
    assert statuses.count(201) == 1
    assert 409 in statuses
    assert set(statuses) <= {200, 201, 409}
    ids = {(await r.json())["orderId"] for r in responses if r.status in (200, 201)}
    assert len(ids) == 1
    order = await services(client).store.by_idempotency_key("raced")
    assert order is not None and order.order_id in ids


def forwarded(*hops: str) -> dict[str, str]:
    return {"X-Forwarded-For": ", ".join(hops)}


async def limited_behind_proxy(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> TestClient[Any, Application]:
    # A bucket of 3 that refills one token per 1000 s, keyed by the address the proxy saw.
    settings = make_settings(
        tmp_path, limits={"requests_per_s": 0.001, "burst": 3, "trust_forwarded_for": True}
    )
    client: TestClient[Any, Application] = await serve(aiohttp_client, settings, market)
    return client


async def test_rotating_the_client_written_forwarded_hops_does_not_escape_the_limit(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    client = await limited_behind_proxy(aiohttp_client, tmp_path, market)
    # nginx appends the address it saw to whatever the client sent.
    statuses = [
        (
            await client.post(
                "/api/order/execute", json=ORDER, headers=forwarded(f"10.0.0.{i}", "203.0.113.7")
            )
        ).status
        for i in range(4)
    ]
    assert statuses == [201, 201, 201, 429]
    other = await client.post("/api/order/execute", json=ORDER, headers=forwarded("203.0.113.8"))
    assert other.status == 201


async def test_a_forged_forwarded_address_does_not_spend_the_victims_bucket(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    client = await limited_behind_proxy(aiohttp_client, tmp_path, market)
    victim = "203.0.113.9"
    for _ in range(5):
        await client.post(
            "/api/order/execute", json=ORDER, headers=forwarded(victim, "198.51.100.1")
        )
    mine = await client.post("/api/order/execute", json=ORDER, headers=forwarded(victim))
    assert mine.status == 201


@pytest.mark.parametrize(
    "value",
    ["not-an-ip", "x" * 8000, "1.2.3.4, " + "y" * 8000, "fe80::1%" + "z" * 8000, " , "],
    ids=["garbage", "8kb", "8kb-last", "8kb-zone", "empty-hops"],
)
async def test_an_invalid_forwarded_address_falls_back_to_the_peer(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket, value: str
) -> None:
    client = await limited_behind_proxy(aiohttp_client, tmp_path, market)
    # Every request varies the value: were it a key, each would get a fresh bucket.
    statuses = [
        (
            await client.post(
                "/api/order/execute", json=ORDER, headers={"X-Forwarded-For": f"{value}{'_' * i}"}
            )
        ).status
        for i in range(4)
    ]
    assert statuses == [201, 201, 201, 429]  # one bucket: the peer's
    peer = await client.post("/api/order/execute", json=ORDER)
    assert peer.status == 429


def test_the_hop_taken_is_the_one_the_trusted_proxies_added() -> None:
    header = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.0.0.2"}
    request = make_mocked_request("GET", "/", headers=header)
    assert client_key(request, 0) == f"ip:{request.remote}"  # not behind a proxy
    assert client_key(request, 1) == "ip:10.0.0.2"
    assert client_key(request, 2) == "ip:203.0.113.7"
    assert client_key(request, 4) == f"ip:{request.remote}"  # fewer hops than proxies


def test_the_buckets_are_bounded_in_bytes() -> None:
    buckets = TokenBuckets(1.0, 1, max_bytes=10_000)
    for i in range(10_000):
        buckets.take(f"ip:2001:db8::{i:x}")
    assert 0 < buckets.size_bytes <= 10_000
    assert buckets.take("ip:2001:db8::270f") > 0  # the latest client is still remembered
    long_key = "key:" + "n" * 20_000  # larger than the bound: kept alone, never grows it
    buckets.take(long_key)
    assert buckets.take(long_key) > 0
    buckets.take("ip:192.0.2.1")
    assert buckets.size_bytes <= 10_000
