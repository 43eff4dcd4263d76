"""The simulated market's controls over HTTP: the engine's /api/sim/* (only when
[sim] controls is on) and /api/tokens, the chain service's /admin/move, /admin/launch and
/admin/tokens, and RemoteMarket's controls over them. Real servers, real sockets, and a
real chain service process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from order_engine.api.openapi import openapi_document
from order_engine.api.tokens import TOKEN_LIST_SCHEMA, TOKENS_PATH
from order_engine.app import build_app
from order_engine.market import MarketData, follow
from order_engine.venues import SimulatedMarket
from order_engine.venues.controls import ControlError
from order_engine.venues.launches import DEFAULT_LIQUIDITY_USD
from order_engine.venues.remote import RemoteMarket
from order_engine.venues.tokens import (
    ALL_TOKENS,
    REGISTRY,
    UPCOMING_TOKENS,
    TokenRegistry,
    TokenState,
)
from tests.support.clients import services, watch
from tests.support.factories import make_settings
from tests.support.processes import Process

WAIT = 10.0  # seconds: a bound on waiting for what must come, never a pause
Client = TestClient[Any, Application]
SOL, USDC = REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC")
WOOF = REGISTRY.resolve("WOOF", upcoming=True)
ONE_SOL = 10**9


@pytest.fixture(autouse=True)
def _no_launch_outlives_its_test() -> Iterator[None]:
    """The process's registry learns launches (in-process ones, and the chain service's
    through the stream): put the upcoming tokens back for the tests that follow."""
    yield
    REGISTRY.sync_pools(())


@pytest.fixture
async def sim(aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket) -> Client:
    """The engine with the in-process market and its controls on."""
    settings = make_settings(tmp_path, sim={"controls": True})
    result: Client = await aiohttp_client(build_app(settings, market=market))
    return result


async def call(client: Client, method: str, path: str, status: int, **kwargs: Any) -> Any:
    resp = await client.request(method, path, **kwargs)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def tokens_by_symbol(client: Client) -> dict[str, dict[str, Any]]:
    body = await call(client, "GET", "/api/tokens", 200)
    return {entry["symbol"]: entry for entry in body["tokens"]}


def raydium_sol_price(client: Client) -> float:
    """SOL in USDC as this engine's streamed view quotes 1 SOL on Raydium."""
    data = services(client).market_data
    assert data is not None
    venue = data.venue("Raydium")
    assert venue is not None
    return venue.best_quote(SOL, USDC, ONE_SOL).price


# -- /api/tokens ---------------------------------------------------------------------------


async def test_tokens_lists_tradable_and_upcoming_tokens(client: Client) -> None:
    listed = await tokens_by_symbol(client)
    assert list(listed) == [t.symbol for t in (*ALL_TOKENS, *UPCOMING_TOKENS)]
    assert listed["SOL"] == {
        "symbol": "SOL",
        "mint": SOL.mint,
        "decimals": 9,
        "state": "tradable",
    }
    assert listed["WOOF"] == {
        "symbol": "WOOF",
        "mint": WOOF.mint,
        "decimals": 6,
        "state": "upcoming",
    }
    assert {t.symbol for t in UPCOMING_TOKENS} == {
        symbol for symbol, entry in listed.items() if entry["state"] == "upcoming"
    }


async def test_tokens_answers_as_its_openapi_description_says(client: Client) -> None:
    doc = openapi_document()
    doc["paths"]["/api/tokens"] = TOKENS_PATH
    doc["components"]["schemas"]["TokenList"] = TOKEN_LIST_SCHEMA
    schema = TOKENS_PATH["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**doc, **schema}).validate(
        await call(client, "GET", "/api/tokens", 200)
    )
    for response in TOKENS_PATH["get"]["responses"].values():
        ref = response["content"]["application/json"]["schema"]["$ref"]
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]


# -- /api/sim/* ----------------------------------------------------------------------------


async def test_the_controls_are_absent_unless_configured(client: Client) -> None:
    for path, body in (
        ("/api/sim/move", {"tokenA": "SOL", "tokenB": "USDC", "bps": 100}),
        ("/api/sim/launch", {"token": "WOOF"}),
    ):
        answer = await call(client, "POST", path, 404, json=body)
        assert answer["error"]["code"] == "not_found"
    assert services(client).market.controls is not None  # the market has them; HTTP not


async def test_a_move_reaches_the_engines_view_before_the_answer(sim: Client) -> None:
    before = raydium_sol_price(sim)
    body = {"tokenA": "SOL", "tokenB": "USDC", "bps": 200}
    move = await call(sim, "POST", "/api/sim/move", 200, json=body)
    assert move["applied"] is True
    assert (move["tokenA"], move["tokenB"], move["bps"]) == ("WSOL", "USDC", 200)
    assert move["priceAfter"] / move["priceBefore"] == pytest.approx(1.02, rel=1e-9)
    assert "raydium:WSOL-USDC" in move["pools"]
    data = services(sim).market_data
    assert data is not None
    assert data.stream_id == move["streamId"]
    assert data.seq >= move["seq"]
    # The view the engine routes on moved with the market, by the bps.
    assert raydium_sol_price(sim) / before == pytest.approx(1.02, abs=1e-4)


async def test_a_launch_makes_the_token_tradable_for_orders(sim: Client) -> None:
    order = {"tokenIn": "SOL", "tokenOut": "WOOF", "amount": "0.5"}
    refused = await call(sim, "POST", "/api/order/execute", 400, json=order)
    assert (refused["error"]["code"], refused["error"]["field"]) == ("unknown_token", "tokenOut")

    launch = await call(sim, "POST", "/api/sim/launch", 201, json={"token": WOOF.mint})
    assert launch["applied"] is True
    assert launch["token"] == {
        "symbol": "WOOF",
        "mint": WOOF.mint,
        "decimals": 6,
        "state": "tradable",
    }
    assert (launch["venue"], launch["poolId"], launch["quoteToken"]) == (
        "Raydium",
        "raydium:WOOF-WSOL",
        "WSOL",
    )
    assert launch["liquidityUsd"] == DEFAULT_LIQUIDITY_USD
    assert int(launch["quoteDepth"]) > 0
    data = services(sim).market_data
    assert data is not None
    assert launch["poolId"] in data.pools

    assert (await tokens_by_symbol(sim))["WOOF"]["state"] == "tradable"
    accepted = await call(sim, "POST", "/api/order/execute", 201, json=order)
    async with asyncio.timeout(WAIT):
        events = await watch(sim, accepted["orderId"])
    assert events[-1]["status"] == "confirmed", events[-1]
    assert events[-1]["data"]["dex"] == "Raydium"

    again = await call(sim, "POST", "/api/sim/launch", 409, json={"token": "woof"})
    assert again["error"] == {
        "code": "already_launched",
        "message": "WOOF is already tradable",
        "field": "token",
    }


async def test_a_launch_on_meteora_with_its_liquidity(sim: Client) -> None:
    body = {"token": "ZAPP", "venue": "Meteora", "liquidityUsd": 80_000}
    launch = await call(sim, "POST", "/api/sim/launch", 201, json=body)
    assert (launch["venue"], launch["poolId"], launch["liquidityUsd"]) == (
        "Meteora",
        "meteora:ZAPP-WSOL",
        80_000,
    )


@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    [
        ("/api/sim/move", {"tokenA": "SOL", "tokenB": "USDC", "bps": 5001}, "invalid_bps", "bps"),
        ("/api/sim/move", {"tokenA": "SOL", "tokenB": "USDC", "bps": "10"}, "invalid_type", "bps"),
        ("/api/sim/move", {"tokenA": "SOL", "tokenB": "USDC"}, "missing_field", "bps"),
        ("/api/sim/move", {"tokenA": "XYZ", "tokenB": "USDC", "bps": 1}, "unknown_token", "tokenA"),
        ("/api/sim/move", {"tokenA": "SOL", "tokenB": "SOL", "bps": 1}, "same_token", "tokenB"),
        ("/api/sim/move", {"tokenA": "WOOF", "tokenB": "SOL", "bps": 1}, "unknown_token", "tokenA"),
        ("/api/sim/move", {"tokenA": 1, "tokenB": "SOL", "bps": 1}, "invalid_type", "tokenA"),
        (
            "/api/sim/move",
            {"tokenA": "SOL", "tokenB": "USDC", "bps": 1, "x": 1},
            "unknown_field",
            "x",
        ),
        ("/api/sim/launch", {}, "missing_field", "token"),
        ("/api/sim/launch", {"token": "NOPE"}, "unknown_token", "token"),
        ("/api/sim/launch", {"token": "WOOF", "venue": "Orca"}, "unknown_venue", "venue"),
        (
            "/api/sim/launch",
            {"token": "WOOF", "liquidityUsd": 1},
            "invalid_liquidity",
            "liquidityUsd",
        ),
        (
            "/api/sim/launch",
            {"token": "WOOF", "liquidityUsd": True},
            "invalid_type",
            "liquidityUsd",
        ),
        ("/api/sim/launch", {"token": "WO\x00OF"}, "invalid_text", "token"),
    ],
)
async def test_bad_input_is_400_naming_the_field(
    sim: Client, path: str, body: dict[str, Any], code: str, field: str
) -> None:
    answer = await call(sim, "POST", path, 400, json=body)
    assert (answer["error"]["code"], answer["error"]["field"]) == (code, field)
    assert (await tokens_by_symbol(sim))["WOOF"]["state"] == "upcoming"


async def test_a_body_that_is_not_a_json_object_is_refused(sim: Client) -> None:
    headers = {"Content-Type": "application/json"}
    for raw, status, code in (
        ("[1]", 400, "invalid_json"),
        ("{", 400, "invalid_json"),
        ('{"token": "WOOF", "token": "ZAPP"}', 400, "invalid_json"),
        ("x" * 5000, 413, "body_too_large"),
    ):
        answer = await call(sim, "POST", "/api/sim/launch", status, data=raw, headers=headers)
        assert answer["error"]["code"] == code
    # A number beyond any float is infinite: out of range, not malformed.
    raw = '{"tokenA": "SOL", "tokenB": "USDC", "bps": 1e309}'
    answer = await call(sim, "POST", "/api/sim/move", 400, data=raw, headers=headers)
    assert (answer["error"]["code"], answer["error"]["field"]) == ("invalid_bps", "bps")
    text = await call(sim, "POST", "/api/sim/launch", 415, data="{}")
    assert text["error"]["code"] == "unsupported_media_type"


# -- the chain service ---------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def admin(
    http: aiohttp.ClientSession, chain: Process, method: str, path: str, status: int, **kw: Any
) -> Any:
    async with http.request(method, chain.url + path, **kw) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return body


async def test_the_chain_service_moves_launches_and_lists(
    http: aiohttp.ClientSession, chain_process: Process
) -> None:
    listed = await admin(http, chain_process, "GET", "/admin/tokens", 200)
    states = {t["symbol"]: t["state"] for t in listed["tokens"]}
    assert states["SNEK"] == "upcoming"
    assert states["SOL"] == "tradable"

    body = {"tokenA": "BONK", "tokenB": "USDC", "bps": -150}
    move = (await admin(http, chain_process, "POST", "/admin/move", 200, json=body))["move"]
    assert move["priceAfter"] / move["priceBefore"] == pytest.approx(0.985, rel=1e-9)
    assert set(move["pools"]) >= {"raydium:BONK-USDC", "meteora:BONK-WSOL"}

    body = {"token": "SNEK", "venue": "Meteora"}
    launch = (await admin(http, chain_process, "POST", "/admin/launch", 200, json=body))["launch"]
    assert (launch["poolId"], launch["token"]["mint"]) == (
        "meteora:SNEK-WSOL",
        REGISTRY.resolve("SNEK", upcoming=True).mint,
    )
    listed = await admin(http, chain_process, "GET", "/admin/tokens", 200)
    assert {t["symbol"]: t["state"] for t in listed["tokens"]}["SNEK"] == "tradable"

    for path, body, status, field in (
        ("/admin/move", {"tokenA": "BONK", "tokenB": "USDC", "bps": 6000}, 400, "bps"),
        ("/admin/move", {"tokenA": "BONK", "bps": 1}, 400, "tokenB"),
        ("/admin/launch", {"token": "SNEK"}, 409, "token"),
        ("/admin/launch", {"token": "WOOF", "liquidityUsd": "lots"}, 400, "liquidityUsd"),
    ):
        refused = await admin(http, chain_process, "POST", path, status, json=body)
        assert refused["error"]["field"] == field
        assert refused["error"]["transient"] is False


@pytest.fixture
async def remote(chain_process: Process) -> AsyncIterator[tuple[RemoteMarket, TokenRegistry]]:
    """A RemoteMarket over the chain process, whose registry is this test's own."""
    tokens = TokenRegistry(ALL_TOKENS, upcoming=UPCOMING_TOKENS)
    market = RemoteMarket(chain_process.url, registry=tokens)
    await market.start()
    try:
        yield market, tokens
    finally:
        await market.stop()


async def test_remote_controls_and_a_follower_that_learns_the_launch(
    remote: tuple[RemoteMarket, TokenRegistry],
) -> None:
    market, tokens = remote
    data = MarketData(max_staleness_slots=10)
    following = asyncio.create_task(follow(data, market.feed_source))
    try:
        listed = {entry.token.symbol: entry.state for entry in await market.controls.tokens()}
        assert listed["GLORB"] is TokenState.UPCOMING

        launch = await market.controls.launch("GLORB", liquidity_usd=30_000)
        async with asyncio.timeout(WAIT):
            await data.reached(launch.seq)
        # Learnt from the stream, before the pool was applied: tradable here too.
        assert tokens.resolve("GLORB") == launch.token
        assert launch.pool_id in data.pools
        glorb = launch.token
        venue = data.venue("Raydium")
        assert venue is not None
        assert venue.best_quote(SOL, glorb, ONE_SOL).amount_out > 0
        quoted = await market.venues["Raydium"].quote(SOL, glorb, ONE_SOL)
        assert venue.best_quote(SOL, glorb, ONE_SOL).amount_out == quoted.amount_out

        move = await market.controls.move_price("GLORB", "SOL", 400)
        async with asyncio.timeout(WAIT):
            await data.reached(move.seq)
        assert move.pools == (launch.pool_id,)
        assert venue.best_quote(SOL, glorb, ONE_SOL).amount_out < quoted.amount_out

        with pytest.raises(ControlError) as caught:
            await market.controls.move_price("GLORB", "SOL", float("nan"))
        assert (caught.value.field, caught.value.status) == ("bps", 400)
        with pytest.raises(ControlError) as caught:
            await market.controls.launch("GLORB")
        assert (caught.value.code, caught.value.status) == ("already_launched", 409)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


async def test_a_scaled_engine_serves_the_controls_of_the_chain_service(
    aiohttp_client: Any, tmp_path: Path, chain_process: Process
) -> None:
    settings = make_settings(
        tmp_path, sim={"controls": True}, venues={"chain_url": chain_process.url}
    )
    client: Client = await aiohttp_client(build_app(settings))
    launch = await call(client, "POST", "/api/sim/launch", 201, json={"token": "MEOWL"})
    assert launch["applied"] is True  # this replica's stream brought the pool first
    assert (await tokens_by_symbol(client))["MEOWL"]["state"] == "tradable"
    order = {"tokenIn": "MEOWL", "tokenOut": "SOL", "amount": "1000000"}
    accepted = await call(client, "POST", "/api/order/execute", 201, json=order)
    async with asyncio.timeout(WAIT):
        events = await watch(client, accepted["orderId"])
    assert events[-1]["status"] == "confirmed", events[-1]
