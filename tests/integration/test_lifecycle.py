"""An order's whole life through a real server and real WebSocket clients."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from tests.support.clients import (
    assert_gap_free,
    post_order,
    read_until_closed,
    services,
    watch,
)

STAGES = ["pending", "routing", "building", "submitted", "confirmed"]


async def test_full_lifecycle_streams_every_stage(client: TestClient[Any, Application]) -> None:
    order_id = await post_order(client)
    events = await watch(client, order_id)
    assert [e["status"] for e in events] == STAGES
    assert_gap_free(events)
    assert all(e["orderId"] == order_id for e in events)
    pending, routing, building, submitted, confirmed = (e["data"] for e in events)
    assert pending == {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", "slippageBps": 50}
    assert routing["attempt"] == 1
    assert {q["dex"] for q in building["quotes"]} == {"Raydium", "Meteora"}
    assert building["dex"] in {"Raydium", "Meteora"}
    assert building["wrapSol"] is True and building["unwrapSol"] is False
    # The chosen venue is the one that quoted the most.
    best = max(building["quotes"], key=lambda q: Decimal(q["amountOut"]))
    assert building["dex"] == best["dex"]
    expected, floor = Decimal(building["expectedAmountOut"]), Decimal(building["minAmountOut"])
    assert floor == (expected * Decimal("0.995")).quantize(Decimal("0.000001"), "ROUND_FLOOR")
    assert submitted["txHash"] == confirmed["txHash"]
    assert confirmed["amountIn"] == "1.5"
    assert Decimal(confirmed["amountOut"]) >= floor
    assert 100 < confirmed["executedPrice"] < 200  # SOL is about 150 USDC
    # The chain recorded exactly one swap for it.
    assert services(client).market.chain.landed_count(submitted["txHash"]) == 1


async def test_get_order_returns_order_and_events(client: TestClient[Any, Application]) -> None:
    order_id = await post_order(client, slippageBps=100, clientOrderId="bot-7")
    streamed = await watch(client, order_id)
    resp = await client.get(f"/api/order/{order_id}")
    assert resp.status == 200
    body = await resp.json()
    assert body["events"] == streamed
    order = body["order"]
    assert order["status"] == "confirmed"
    assert order["slippageBps"] == 100
    assert order["clientOrderId"] == "bot-7"
    assert order["txHash"] == streamed[-1]["data"]["txHash"]
    assert order["amountOut"] == streamed[-1]["data"]["amountOut"]


async def test_late_connection_gets_whole_history(client: TestClient[Any, Application]) -> None:
    order_id = await post_order(client)
    first = await watch(client, order_id)  # waits for the end
    late = await watch(client, order_id)
    assert late == first
    assert [e["status"] for e in late] == STAGES


async def test_early_connection_misses_nothing(client: TestClient[Any, Application]) -> None:
    """The watcher is connected while the order is held at the chain: it gets the history
    so far, then the live events, with no gap and no duplicate."""
    chain = services(client).market.chain
    chain.hold()
    order_id = await post_order(client)
    async with client.ws_connect(f"/api/order/status?orderId={order_id}") as ws:
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(5):
            while not seen or seen[-1]["status"] != "submitted":
                seen.append(await ws.receive_json())
        chain.release()
        seen += await read_until_closed(ws)
    assert [e["status"] for e in seen] == STAGES
    assert_gap_free(seen)


async def test_several_watchers_all_get_everything(client: TestClient[Any, Application]) -> None:
    chain = services(client).market.chain
    chain.hold()
    order_id = await post_order(client)
    sockets = [await client.ws_connect(f"/api/order/status?orderId={order_id}") for _ in range(5)]
    first_messages = [await ws.receive_json() for ws in sockets]  # all are subscribed
    assert {m["seq"] for m in first_messages} == {1}
    chain.release()
    streams = await asyncio.gather(*(read_until_closed(ws) for ws in sockets))
    for ws, rest in zip(sockets, streams, strict=True):
        assert [first_messages[0], *rest] == [first_messages[0], *streams[0]]
        assert ws.close_code == 1000
        await ws.close()
    assert [e["status"] for e in [first_messages[0], *streams[0]]] == STAGES


async def test_resume_after_seq(client: TestClient[Any, Application]) -> None:
    order_id = await post_order(client)
    everything = await watch(client, order_id)
    resumed = await watch(client, order_id, after=2)
    assert resumed == everything[2:]
    assert_gap_free(resumed, start=3)
    assert await watch(client, order_id, after=len(everything)) == []


async def _refused_after(client: TestClient[Any, Application], order_id: str, after: int) -> Any:
    url = f"/api/order/status?orderId={order_id}&after={after}"
    async with client.ws_connect(url) as ws:
        error = await ws.receive_json(timeout=5)
        closing = await ws.receive(timeout=5)
    assert closing.type is WSMsgType.CLOSE and closing.data == WSCloseCode.POLICY_VIOLATION
    return error["error"]


async def test_resume_after_beyond_the_last_event_is_refused_at_once(
    client: TestClient[Any, Application],
) -> None:
    # Finished: nothing will come after its last event.
    finished = await post_order(client)
    last = len(await watch(client, finished))
    error = await _refused_after(client, finished, last + 3)
    assert (error["code"], error["field"]) == ("invalid_after", "after")
    # Unfinished: its next events have seqs the client says it has seen; waiting for more
    # would skip its terminal event and never end.
    chain = services(client).market.chain
    chain.hold()
    try:
        held = await post_order(client)
        async with client.ws_connect(f"/api/order/status?orderId={held}") as ws:
            while (await ws.receive_json(timeout=5))["status"] != "submitted":
                pass
        error = await _refused_after(client, held, 10)
        assert error["code"] == "invalid_after"
    finally:
        chain.release()


async def test_many_concurrent_orders_each_watched(client: TestClient[Any, Application]) -> None:
    async def one() -> list[dict[str, Any]]:
        order_id = await post_order(client, amount="0.25")
        return await watch(client, order_id)

    results = await asyncio.gather(*(one() for _ in range(200)))
    for events in results:
        assert events[-1]["status"] in {"confirmed", "failed"}
        assert_gap_free(events)
        assert [e["status"] for e in events[:2]] == ["pending", "routing"]
    ledger = services(client).market.chain.ledger
    signatures = [entry.signature for entry in ledger]
    assert len(signatures) == len(set(signatures))
    confirmed = sum(e[-1]["status"] == "confirmed" for e in results)
    assert confirmed == len(ledger)


async def test_submit_and_stream_on_one_websocket(client: TestClient[Any, Application]) -> None:
    async with client.ws_connect("/api/orders/execute") as ws:
        await ws.send_json({"tokenIn": "usdc", "tokenOut": "SOL", "amount": "300"})
        accepted = await ws.receive_json()
        assert accepted["status"] == "pending"
        events = await read_until_closed(ws)
        assert ws.close_code == 1000
    assert [e["status"] for e in events] == STAGES
    assert {e["orderId"] for e in events} == {accepted["orderId"]}
    assert events[2]["data"]["unwrapSol"] is True


async def test_post_alias_path(client: TestClient[Any, Application]) -> None:
    resp = await client.post(
        "/api/orders/execute", json={"tokenIn": "SOL", "tokenOut": "USDC", "amount": 2}
    )
    assert resp.status == 201
    body = await resp.json()
    assert body["message"] == "Order submitted successfully."


async def test_health(client: TestClient[Any, Application]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200


async def test_an_order_is_one_line_in_the_log_at_info(
    client: TestClient[Any, Application], caplog: pytest.LogCaptureFixture
) -> None:
    """Its stages are logged at DEBUG; at INFO, one line says how it ended."""
    caplog.set_level(logging.INFO, logger="order_engine")
    order_id = await post_order(client)
    await watch(client, order_id)
    lines = [r.getMessage() for r in caplog.records if order_id in r.getMessage()]
    assert lines == [f"[{order_id}] confirmed"]
