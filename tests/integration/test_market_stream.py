"""Live venue prices: GET /api/market and the WebSocket /api/market/stream, fed by the pools
the engine follows from the chain's stream."""

from __future__ import annotations

import asyncio
import itertools
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.api.auth import new_key
from order_engine.api.market import MIN_INTERVAL_S
from order_engine.app import build_app
from order_engine.market import MarketData
from order_engine.venues import SimulatedMarket
from order_engine.venues.tokens import REGISTRY
from tests.integration.test_market_data import Link
from tests.integration.test_openapi import check, check_message, document
from tests.support.clients import post_order, read_until_closed, services, watch
from tests.support.factories import make_settings

STREAM = "/api/market/stream"
VENUES = {"Raydium", "Meteora"}


async def caught_up(client: TestClient[Any, Application]) -> MarketData:
    """The engine's streamed view, once it has applied everything the chain has published."""
    data = services(client).market_data
    assert data is not None
    market = services(client).market
    assert isinstance(market, SimulatedMarket)
    async with asyncio.timeout(5):
        await data.reached(market.feed.last_seq)
    return data


def charted_pairs(market: SimulatedMarket) -> set[str]:
    """Both directions of every pool's pair, named as orders name them."""
    names = set()
    for venue in market.venues.values():
        for pool in venue.pools.values():
            x, y = ("SOL" if t == "WSOL" else t for t in (pool.token_x, pool.token_y))
            names |= {f"{x}→{y}", f"{y}→{x}"}
    return names


def by_pair(message: dict[str, Any]) -> dict[str, dict[str, float]]:
    """pair -> venue -> price."""
    return {p["pair"]: {q["dex"]: q["price"] for q in p["prices"]} for p in message["pairs"]}


def own_price(market: SimulatedMarket, entry: dict[str, Any], dex: str) -> float:
    """The venue's own quote of the entry's reference trade, in the entry's convention."""
    token_in, token_out = REGISTRY.resolve(entry["tokenIn"]), REGISTRY.resolve(entry["tokenOut"])
    amount = token_in.to_base(Decimal(entry["amountIn"]))
    price = market.venues[dex].best_quote(token_in, token_out, amount).price
    return price if entry["base"] == entry["tokenIn"] else 1 / price


async def receive(ws: ClientWebSocketResponse, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        msg = await ws.receive()
    assert msg.type is WSMsgType.TEXT, msg
    message: dict[str, Any] = msg.json()
    return message


async def test_the_first_message_prices_every_pair_on_both_venues(
    client: TestClient[Any, Application], market: SimulatedMarket
) -> None:
    data = await caught_up(client)
    doc = await document(client)
    async with client.ws_connect(STREAM) as ws:
        first = await receive(ws)
    check_message(doc, "MarketPrices", first)
    assert first["slot"] == data.slot
    assert set(by_pair(first)) == charted_pairs(market)
    for entry in first["pairs"]:
        assert {q["dex"] for q in entry["prices"]} == VENUES, entry
        for quote in entry["prices"]:
            # The mirrors quote exactly as the venues: the streamed price is the venue's own.
            assert quote["price"] == own_price(market, entry, quote["dex"]), entry
    sol_usdc = next(e for e in first["pairs"] if e["pair"] == "SOL→USDC")
    assert (sol_usdc["base"], sol_usdc["quote"]) == ("SOL", "USDC")
    usdc_sol = next(e for e in first["pairs"] if e["pair"] == "USDC→SOL")
    assert (usdc_sol["base"], usdc_sol["quote"]) == ("SOL", "USDC")  # USDC per SOL both ways

    resp = await client.get("/api/market")
    assert resp.status == 200
    body = await resp.json()
    check(doc, "/api/market", "get", 200, body)
    assert by_pair(body) == by_pair(first)  # nothing moved in between


async def test_a_moved_pool_is_streamed_and_only_the_pairs_it_moved(
    client: TestClient[Any, Application], market: SimulatedMarket
) -> None:
    await caught_up(client)
    async with client.ws_connect(STREAM) as ws:
        first = await receive(ws)
        market.step()  # every pool drifts (a DLMM price only once it leaves its bin)
        stepped = await receive(ws)
        # A constant-product pool moves with any trade: every pair moved on Raydium.
        assert set(by_pair(stepped)) == charted_pairs(market)
        for entry in stepped["pairs"]:
            for quote in entry["prices"]:
                assert quote["price"] == own_price(market, entry, quote["dex"]), entry
        old, new = by_pair(first)["SOL→USDC"], by_pair(stepped)["SOL→USDC"]
        assert new["Raydium"] != old["Raydium"]
        assert stepped["slot"] >= first["slot"]

        # One pool moves (as a trade would move it): only the pairs it prices change.
        pool = market.venues["Raydium"].pools["raydium:WSOL-USDC"]
        pool.trade_towards(pool.spot_price() * 1.01, market.now())
        assert market.feed.publish(pool) is not None
        moved = await receive(ws)
        pairs = by_pair(moved)
        assert {"SOL→USDC", "USDC→SOL"} <= set(pairs) < charted_pairs(market)
        sol_usdc = next(e for e in moved["pairs"] if e["pair"] == "SOL→USDC")
        raydium, meteora = (
            next(q for q in sol_usdc["prices"] if q["dex"] == dex) for dex in ("Raydium", "Meteora")
        )
        assert raydium["price"] == pytest.approx(new["Raydium"] * 1.01, rel=2e-3)
        assert raydium["price"] == own_price(market, sol_usdc, "Raydium")
        # The venue that did not move keeps its price, and when it was seen.
        stepped_meteora = next(
            q
            for e in stepped["pairs"]
            if e["pair"] == "SOL→USDC"
            for q in e["prices"]
            if q["dex"] == "Meteora"
        )
        assert meteora == stepped_meteora


async def test_a_busy_market_is_streamed_at_a_bounded_rate(
    client: TestClient[Any, Application], market: SimulatedMarket
) -> None:
    data = await caught_up(client)
    steps = 0
    stop = asyncio.Event()

    async def drive() -> None:
        # The market moves as fast as the view can follow it.
        nonlocal steps
        while not stop.is_set():
            market.step()
            steps += 1
            await data.reached(market.feed.last_seq)

    async with client.ws_connect(STREAM) as ws:
        seen = by_pair(await receive(ws))
        started = time.monotonic()
        driver = asyncio.create_task(drive())
        try:
            updates = [await receive(ws) for _ in range(5)]
        finally:
            stop.set()
            await driver
        elapsed = time.monotonic() - started
        stamps = [u["ts"] for u in updates]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert min(gaps) >= MIN_INTERVAL_S - 0.01, gaps
        assert len(updates) <= elapsed / MIN_INTERVAL_S + 1
        # Hundreds of pool updates, a handful of messages: the changes were coalesced.
        assert steps > 4 * len(updates), steps
        # Coalesced, not lost: the first message and the changes after it add up to the
        # market's current prices (a pair that did not move in an interval is left out of
        # that message; a DLMM pool stays in its bin for most steps).
        for update in updates:
            assert set(by_pair(update)) <= charted_pairs(market)
            seen |= by_pair(update)
        await caught_up(client)
        resp = await client.get("/api/market")
        assert resp.status == 200
        now = by_pair(await resp.json())
        while seen != now:
            seen |= by_pair(await receive(ws))
    assert set(seen) == charted_pairs(market)


async def test_the_market_is_followed_while_routing_asks_the_venues(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    """Armed limit orders fire on the streamed pools: the stream is followed (and served)
    even when routing quotes by asking each venue."""
    settings = make_settings(tmp_path, venues={"profile": "instant", "quote_from_stream": False})
    client = await aiohttp_client(build_app(settings, market=market))
    await caught_up(client)
    resp = await client.get("/api/market")
    assert resp.status == 200, await resp.text()
    events = await watch(client, await post_order(client))
    routing = next(e for e in events if e["status"] == "routing")
    assert routing["data"]["quoteSource"] == "rpc"


async def test_a_view_behind_the_chain_is_refused_and_its_watchers_closed(
    aiohttp_client: Any,
    tmp_path: Path,
    market: SimulatedMarket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = Link(market.feed)
    monkeypatch.setattr("order_engine.app.feed_source", lambda _: link)
    client = await aiohttp_client(build_app(make_settings(tmp_path), market=market))
    await caught_up(client)
    async with client.ws_connect(STREAM) as ws:
        await receive(ws)
        link.cut()  # the view stops hearing from the chain
        replies = await read_until_closed(ws)
    assert ws.close_code == 1013
    assert [r["error"]["code"] for r in replies] == ["market_data_stale"]
    async with client.ws_connect(STREAM) as refused:
        replies = await read_until_closed(refused)
    assert refused.close_code == 1013
    assert [r["error"]["code"] for r in replies] == ["market_data_stale"]
    assert (await client.get("/api/market")).status == 503

    link.restore()
    await caught_up(client)
    async with client.ws_connect(STREAM) as ws:
        assert set(by_pair(await receive(ws))) == charted_pairs(market)


async def test_the_stream_takes_the_api_key_as_the_other_websockets_do(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    key, entry = new_key("carol")
    settings = make_settings(tmp_path, auth={"api_keys": (entry,)})
    client = await aiohttp_client(build_app(settings, market=market))
    await caught_up(client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(STREAM)
    assert refused.value.status == 401
    assert (await client.get("/api/market")).status == 401
    async with client.ws_connect(f"{STREAM}?apiKey={key}") as ws:
        assert set(by_pair(await receive(ws))) == charted_pairs(market)
    assert (await client.get("/api/market", headers={"x-api-key": key})).status == 200
