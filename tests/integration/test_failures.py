"""Retries, permanent failures, venue faults and back-pressure, end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.app import build_app
from order_engine.venues import SimulatedMarket
from tests.support.clients import assert_gap_free, post_order, services, watch
from tests.support.factories import make_settings


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["status"] for e in events]


# A venue's faults break its quote call; routing makes that call only when it does not quote
# from the streamed pool states, so these tests route by the venues' calls.
RPC_QUOTES: dict[str, Any] = {"quote_from_stream": False}


@pytest.fixture
async def rpc_client(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> TestClient[Any, Application]:
    settings = make_settings(tmp_path, venues=RPC_QUOTES)
    client: TestClient[Any, Application] = await aiohttp_client(build_app(settings, market=market))
    return client


async def test_dropped_transaction_is_retried_then_confirmed(
    client: TestClient[Any, Application],
) -> None:
    services(client).market.chain.drop_next(1)
    events = await watch(client, await post_order(client))
    assert statuses(events) == [
        "pending",
        "routing",
        "building",
        "submitted",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    assert_gap_free(events)
    retry = events[4]["data"]
    assert retry["attempt"] == 2
    assert retry["retryReason"]["code"] == "tx_dropped"
    # A new transaction, and only it landed.
    first_tx, second_tx = events[3]["data"]["txHash"], events[6]["data"]["txHash"]
    assert first_tx != second_tx == events[-1]["data"]["txHash"]
    chain = services(client).market.chain
    assert chain.landed_count(first_tx) == 0
    assert chain.landed_count(second_tx) == 1


async def test_retries_exhausted_fail_with_the_reason(
    client: TestClient[Any, Application],
) -> None:
    services(client).market.chain.drop_next(3)
    order_id = await post_order(client)
    events = await watch(client, order_id)
    assert statuses(events).count("submitted") == 3
    failed = events[-1]
    assert failed["status"] == "failed"
    assert failed["data"]["error"]["code"] == "tx_dropped"
    assert failed["data"]["attempts"] == 3
    order = await services(client).store.get(order_id)
    assert order is not None
    assert (order.error_code, order.attempts) == ("tx_dropped", 3)
    assert services(client).market.chain.ledger == []


async def test_permanent_failure_is_not_retried(client: TestClient[Any, Application]) -> None:
    events = await watch(client, await post_order(client, amount=5_000_000))
    assert statuses(events) == ["pending", "routing", "failed"]
    assert events[-1]["data"]["error"]["code"] == "price_impact_too_high"
    assert events[-1]["data"]["attempts"] == 1


async def test_a_venue_down_is_skipped(rpc_client: TestClient[Any, Application]) -> None:
    client = rpc_client
    services(client).market.venues["Raydium"].faults.down = True
    events = await watch(client, await post_order(client))
    assert events[-1]["status"] == "confirmed"
    building = events[2]["data"]
    assert building["dex"] == "Meteora"
    assert [q["dex"] for q in building["quotes"]] == ["Meteora"]
    assert building["skipped"] == [{"dex": "Raydium", "code": "venue_down"}]


async def test_a_venue_that_times_out_is_skipped(rpc_client: TestClient[Any, Application]) -> None:
    client = rpc_client
    services(client).market.venues["Meteora"].faults.timeout = True
    events = await watch(client, await post_order(client))
    assert events[-1]["status"] == "confirmed"
    assert events[2]["data"]["skipped"] == [{"dex": "Meteora", "code": "venue_timeout"}]


async def test_all_venues_down_is_transient_then_fails(
    rpc_client: TestClient[Any, Application],
) -> None:
    client = rpc_client
    for venue in services(client).market.venues.values():
        venue.faults.down = True
    events = await watch(client, await post_order(client))
    assert statuses(events) == ["pending", "routing", "routing", "routing", "failed"]
    assert events[-1]["data"]["error"]["code"] == "no_quotes"
    assert [e["data"]["attempt"] for e in events[1:4]] == [1, 2, 3]


async def test_venue_recovers_between_attempts(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    # A backoff of at least 500 ms leaves ample time to restore the venues after attempt 1.
    settings = make_settings(
        tmp_path, engine={"retry_base_ms": 1000.0, "retry_max_ms": 1000.0}, venues=RPC_QUOTES
    )
    client = await aiohttp_client(build_app(settings, market=market))
    for venue in market.venues.values():
        venue.faults.down = True
    order_id = await post_order(client)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        async with asyncio.timeout(5):
            seen = [await ws.receive_json()]
            while seen[-1]["status"] != "routing":
                seen.append(await ws.receive_json())
        for venue in market.venues.values():
            venue.faults.down = False
        async with asyncio.timeout(5):
            while seen[-1]["status"] not in {"confirmed", "failed"}:
                seen.append(await ws.receive_json())
    assert statuses(seen)[:5] == ["pending", "routing", "routing", "building", "submitted"]
    assert seen[2]["data"]["retryReason"]["code"] == "no_quotes"
    assert seen[-1]["status"] == "confirmed"
    assert_gap_free(seen)


async def test_full_queue_refuses_with_503_and_stores_nothing(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    settings = make_settings(
        tmp_path,
        engine={"workers": 1, "queue_size": 2, "quote_timeout_ms": 60_000.0},
        server={"shutdown_grace_s": 0.1},
        venues=RPC_QUOTES,
    )
    for venue in market.venues.values():
        venue.faults.timeout = True  # the one worker is stuck quoting
    client = await aiohttp_client(build_app(settings, market=market))
    first = await post_order(client)
    async with client.ws_connect(f"/api/order/status?orderId={first}") as ws:
        async with asyncio.timeout(5):
            while (await ws.receive_json())["status"] != "routing":
                pass
    await post_order(client)
    await post_order(client)
    resp = await client.post(
        "/api/order/execute", json={"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1}
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "queue_full"
    assert len(await services(client).store.unfinished()) == 3


async def test_orders_are_refused_once_shutdown_began(client: TestClient[Any, Application]) -> None:
    await services(client).engine.stop(grace=1)
    resp = await client.post(
        "/api/order/execute", json={"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1}
    )
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "shutting_down"
    assert "Retry-After" in resp.headers


async def test_a_build_that_fails_is_retried_and_leaves_nothing_held(
    client: TestClient[Any, Application],
) -> None:
    """The chain's RPC is unreachable when the transaction is built: nothing was sent, so
    the order is retried at once instead of being stranded in `building`."""
    services(client).market.chain.fail_next_builds(1)
    events = await watch(client, await post_order(client))
    assert statuses(events) == [
        "pending",
        "routing",
        "building",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    assert events[3]["data"]["retryReason"]["code"] == "venue_down"
    assert services(client).engine.held == 0
