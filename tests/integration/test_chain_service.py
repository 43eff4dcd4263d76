"""The chain service and its remote adapter: a real server, real HTTP, the same market."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from order_engine.chain import build_chain_app
from order_engine.venues import SimulatedMarket
from order_engine.venues.base import (
    NO_ROUTE,
    SLIPPAGE_EXCEEDED,
    TX_DROPPED,
    VENUE_DOWN,
    Hop,
    PermanentVenueError,
    Quote,
    TransientVenueError,
    TxState,
)
from order_engine.venues.remote import ChainServiceUnavailable, RemoteMarket
from order_engine.venues.remote_clients import RemoteChain
from order_engine.venues.tokens import REGISTRY
from order_engine.venues.wire import quote_to_json
from tests.support.processes import Process, free_port

SOL, USDC, BONK, JUP, RAY, WSOL = (
    REGISTRY.resolve(s) for s in ("SOL", "USDC", "BONK", "JUP", "RAY", "WSOL")
)
ONE_SOL = 1_000_000_000
Client = TestClient[Any, Any]


@pytest.fixture
async def server(aiohttp_server: Any, market: SimulatedMarket) -> TestServer:
    result: TestServer = await aiohttp_server(build_chain_app(market))
    return result


@pytest.fixture
async def http(aiohttp_client: Any, server: TestServer) -> Client:
    result: Client = await aiohttp_client(server)
    return result


@pytest.fixture
async def remote(server: TestServer) -> AsyncIterator[RemoteMarket]:
    market = RemoteMarket(str(server.make_url("")))
    await market.start()
    try:
        yield market
    finally:
        await market.stop()


async def post(http: Client, path: str, body: Any, status: int = 200) -> Any:
    resp = await http.post(path, json=body)
    payload = await resp.json()
    assert resp.status == status, payload
    return payload


async def sol_to_usdc(remote: RemoteMarket, venue: str = "Raydium") -> Quote:
    return await remote.venues[venue].quote(SOL, USDC, ONE_SOL)


# -- venues --------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", ["Raydium", "Meteora"])
async def test_remote_quotes_equal_in_process_quotes(
    remote: RemoteMarket, market: SimulatedMarket, venue: str
) -> None:
    local = market.venues[venue]
    for token_in, token_out, amount in [
        (SOL, USDC, ONE_SOL),
        (USDC, BONK, 25_000_000),  # two hops on some venues
        (JUP, RAY, 123_456_789),
    ]:
        expected = await local.quote(token_in, token_out, amount)
        assert await remote.venues[venue].quote(token_in, token_out, amount) == expected
    # A curve keeps its holes: too small (1 lamport) and too large for the pools.
    sizes = [1, ONE_SOL, 7 * ONE_SOL, 10**19]
    curve = await remote.venues[venue].quote_curve(SOL, USDC, sizes)
    assert curve == await local.quote_curve(SOL, USDC, sizes)
    assert curve[0] is None
    assert curve[1] is not None


async def test_a_permanent_venue_error_keeps_its_code(remote: RemoteMarket, http: Client) -> None:
    with pytest.raises(PermanentVenueError) as caught:
        await remote.venues["Meteora"].quote(SOL, WSOL, ONE_SOL)
    assert caught.value.code == NO_ROUTE
    assert not caught.value.transient
    body = {"tokenIn": "SOL", "tokenOut": "WSOL", "amountIn": "1000"}
    payload = await post(http, "/venues/Meteora/quote", body, status=422)
    assert payload["error"]["code"] == NO_ROUTE
    assert payload["error"]["transient"] is False


async def test_a_venue_set_down_answers_transient_venue_down(
    remote: RemoteMarket, http: Client
) -> None:
    answer = await post(http, "/admin/faults/Raydium", {"down": True})
    assert answer == {"venue": "Raydium", "down": True, "timeout": False}
    with pytest.raises(TransientVenueError) as caught:
        await sol_to_usdc(remote)
    assert caught.value.code == VENUE_DOWN
    assert "not answering" in caught.value.message  # the venue's own words, not a socket's
    body = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": str(ONE_SOL)}
    payload = await post(http, "/venues/Raydium/quote", body, status=503)
    assert payload["error"]["transient"] is True
    await sol_to_usdc(remote, "Meteora")  # only Raydium is down

    await post(http, "/admin/faults/Raydium", {"down": False})
    assert (await sol_to_usdc(remote)).amount_out > 0


async def test_a_hung_venue_is_abandoned_by_the_callers_timeout(
    remote: RemoteMarket, http: Client, market: SimulatedMarket
) -> None:
    await post(http, "/admin/faults/Meteora", {"timeout": True})
    assert market.venues["Meteora"].faults.timeout
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await sol_to_usdc(remote, "Meteora")
    await post(http, "/admin/faults/Meteora", {"timeout": False})
    # The session is still usable after the cancelled request.
    assert (await sol_to_usdc(remote, "Meteora")).amount_out > 0


# -- the chain -----------------------------------------------------------------------------


async def test_build_submit_wait_lands_once_and_shows_in_the_ledger(
    remote: RemoteMarket, http: Client, market: SimulatedMarket
) -> None:
    quote = await sol_to_usdc(remote)
    tx = await remote.chain.build([quote], quote.amount_out * 99 // 100)
    assert tx.legs == (quote,)
    assert tx.wrap_sol and not tx.unwrap_sol
    assert await remote.chain.submit(tx) == tx.signature

    status = await remote.chain.wait(tx.signature, 5)
    assert status.state is TxState.LANDED, status
    assert status.receipt is not None
    assert status.receipt.amount_in == ONE_SOL
    assert await remote.chain.status(tx.signature) == status

    ledger = (await (await http.get("/admin/ledger")).json())["entries"]
    assert ledger == [
        {
            "signature": tx.signature,
            "slot": status.receipt.slot,
            "tokenIn": "SOL",
            "tokenOut": "USDC",
            "amountIn": str(ONE_SOL),
            "amountOut": str(status.receipt.amount_out),
            "legs": [
                {
                    "venue": "Raydium",
                    "amountIn": str(ONE_SOL),
                    "amountOut": str(status.receipt.amount_out),
                }
            ],
        }
    ]
    assert market.chain.landed_count(tx.signature) == 1


async def test_a_split_transaction_lands_atomically(
    remote: RemoteMarket, market: SimulatedMarket
) -> None:
    legs = [await sol_to_usdc(remote, "Raydium"), await sol_to_usdc(remote, "Meteora")]
    tx = await remote.chain.build(legs, 1)
    await remote.chain.submit(tx)
    status = await remote.chain.wait(tx.signature, 5)
    assert status.receipt is not None
    assert [leg.venue for leg in status.receipt.legs] == ["Raydium", "Meteora"]
    assert market.chain.landed_count(tx.signature) == 1


async def test_a_resubmitted_transaction_lands_once(
    remote: RemoteMarket, http: Client, market: SimulatedMarket
) -> None:
    await post(http, "/admin/hold", {})
    quote = await sol_to_usdc(remote)
    tx = await remote.chain.build([quote], 1)
    await remote.chain.submit(tx)
    await remote.chain.submit(tx)
    assert (await remote.chain.status(tx.signature)).state is TxState.PENDING
    # A long poll that times out reports the truth: still pending.
    assert (await remote.chain.wait(tx.signature, 0.01)).state is TxState.PENDING

    waiting = asyncio.create_task(remote.chain.wait(tx.signature, 5))
    await post(http, "/admin/release", {})
    assert (await waiting).state is TxState.LANDED
    await remote.chain.submit(tx)  # after landing, too
    assert market.chain.landed_count(tx.signature) == 1
    assert len((await (await http.get("/admin/ledger")).json())["entries"]) == 1


async def test_slippage_fails_the_transaction_with_a_transient_error(
    remote: RemoteMarket, market: SimulatedMarket
) -> None:
    quote = await sol_to_usdc(remote)
    tx = await remote.chain.build([quote], quote.amount_out + 1)
    await remote.chain.submit(tx)
    status = await remote.chain.wait(tx.signature, 5)
    assert status.state is TxState.FAILED
    assert isinstance(status.error, TransientVenueError)
    assert status.error.code == SLIPPAGE_EXCEEDED
    assert "below the minimum" in status.error.message
    assert market.chain.ledger == []


async def test_a_dropped_transaction_fails_with_tx_dropped(
    remote: RemoteMarket, http: Client
) -> None:
    assert await post(http, "/admin/drop_next", {"count": 1}) == {"dropNext": 1}
    quote = await sol_to_usdc(remote)
    dropped = await remote.chain.build([quote], 1)
    await remote.chain.submit(dropped)
    status = await remote.chain.wait(dropped.signature, 5)
    assert status.state is TxState.FAILED
    assert isinstance(status.error, TransientVenueError)
    assert status.error.code == TX_DROPPED
    # Only the next one: a rebuilt transaction lands.
    retry = await remote.chain.build([quote], 1)
    await remote.chain.submit(retry)
    assert (await remote.chain.wait(retry.signature, 5)).state is TxState.LANDED


async def test_an_unknown_signature_is_unknown(remote: RemoteMarket, http: Client) -> None:
    signature = "5" * 88
    assert (await remote.chain.status(signature)).state is TxState.UNKNOWN
    assert (await remote.chain.wait(signature, 5)).state is TxState.UNKNOWN
    payload = await (await http.get(f"/tx/{signature}")).json()
    assert payload == {"status": {"state": "unknown", "receipt": None, "error": None}}


# -- refusals ------------------------------------------------------------------------------


def valid_leg() -> dict[str, Any]:
    """A hand-made leg the chain could execute, for requests to spoil one field at a time."""
    hop = Hop("raydium:WSOL-USDC", "WSOL", "USDC", ONE_SOL, 150_000_000, 2_500_000)
    return quote_to_json(
        Quote("Raydium", SOL, USDC, ONE_SOL, 150_000_000, 25.0, 150.0, 0.2, (hop,))
    )


QUOTE = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1000"}


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("POST", "/venues/Raydium/quote", b"{not json", "not valid JSON"),
        ("POST", "/venues/Raydium/quote", [], "body: expected a JSON object"),
        ("POST", "/venues/Raydium/quote", {"tokenOut": "USDC"}, "tokenIn: missing"),
        ("POST", "/venues/Raydium/quote", QUOTE | {"tokenIn": "DOGE"}, "unknown token 'DOGE'"),
        ("POST", "/venues/Raydium/quote", QUOTE | {"amountIn": "1.5"}, "amountIn: expected"),
        ("POST", "/venues/Raydium/quote", QUOTE | {"amountIn": "0"}, "amountIn: must be"),
        ("POST", "/venues/Raydium/quote", QUOTE | {"amountIn": str(2**64)}, "amountIn: must be"),
        ("POST", "/venues/Raydium/quote", QUOTE | {"amountIn": 1e30}, "amountIn: expected"),
        (
            "POST",
            "/venues/Meteora/quote_curve",
            {"tokenIn": "SOL", "tokenOut": "USDC", "amounts": ["1"] * 1025},
            "at most 1024",
        ),
        (
            "POST",
            "/venues/Meteora/quote_curve",
            {"tokenIn": "SOL", "tokenOut": "USDC", "amounts": ["1", "-3"]},
            r"amounts\[1\]: must be",
        ),
        ("POST", "/tx/build", {"legs": [], "minOut": "1"}, "at least one leg"),
        (
            "POST",
            "/tx/build",
            {"legs": [valid_leg() | {"venue": "Orca"}], "minOut": "1"},
            r"legs\[0\].venue: unknown venue 'Orca'",
        ),
        (
            "POST",
            "/tx/build",
            {"legs": [valid_leg() | {"tokenOut": "BONK"}], "minOut": "1"},
            "does not end in BONK",
        ),
        (
            "POST",
            "/tx/build",
            {"legs": [valid_leg() | {"hops": []}], "minOut": "1"},
            "at least one hop",
        ),
        (
            "POST",
            "/tx/build",
            {"legs": [valid_leg()], "minOut": "-1"},
            "minOut: must be between 0",
        ),
        ("POST", "/tx/submit", {"tx": {"signature": "abc"}}, "tx.legs: missing"),
        ("GET", "/tx/abc/wait?timeout=soon", None, "timeout: 'soon' is not a number"),
        ("GET", "/tx/abc/wait?timeout=nan", None, "timeout: must be a finite number"),
        ("POST", "/admin/drop_next", {"count": "2"}, "count: expected an integer"),
        ("POST", "/admin/faults/Raydium", {"down": "yes"}, "down: expected true or false"),
    ],
)
async def test_malformed_requests_answer_400_with_the_reason(
    http: Client, method: str, path: str, body: Any, message: str
) -> None:
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    resp = await http.request(method, path, **kwargs)
    payload = await resp.json()
    assert resp.status == 400, payload
    assert payload["error"]["code"] == "bad_request"
    assert payload["error"]["transient"] is False
    assert re.search(message, payload["error"]["message"]), payload


async def test_unknown_venues_and_paths_answer_404_json(http: Client) -> None:
    payload = await post(http, "/venues/Orca/quote", QUOTE, status=404)
    assert payload["error"]["code"] == "unknown_venue"
    assert "Meteora, Raydium" in payload["error"]["message"]
    payload = await post(http, "/nowhere", {}, status=404)
    assert payload["error"]["code"] == "not_found"
    resp = await http.get("/venues/Raydium/quote")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert resp.headers["Allow"] == "POST"


async def test_a_refused_transaction_is_a_permanent_error_for_the_adapter(
    remote: RemoteMarket,
) -> None:
    quote = await sol_to_usdc(remote)
    with pytest.raises(PermanentVenueError) as caught:
        await remote.chain.build([quote], 2**64)
    assert caught.value.code == "bad_request"
    assert "minOut" in caught.value.message


# -- an unreachable service ----------------------------------------------------------------


async def test_starting_against_a_dead_port_says_so() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    market = RemoteMarket(url)
    with pytest.raises(ChainServiceUnavailable, match="unreachable") as caught:
        await market.start()
    assert url in str(caught.value)
    assert "order_engine.chain" in str(caught.value)
    with pytest.raises(RuntimeError, match="start"):
        await market.venues["Raydium"].quote(SOL, USDC, ONE_SOL)


async def test_an_unreachable_chain_never_guesses_a_status() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        chain = RemoteChain(session, url)
        for call in (chain.status("sig"), chain.wait("sig", 1)):
            with pytest.raises(TransientVenueError) as caught:
                await call
            assert caught.value.code == VENUE_DOWN


# -- the process ---------------------------------------------------------------------------


async def test_the_service_runs_as_a_process_and_stops_cleanly_on_sigterm(
    chain_process: Process,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{chain_process.url}/healthz") as r,
    ):
        health = await r.json()
    assert health["profile"] == "instant"
    assert health["venues"] == ["Meteora", "Raydium"]
    chain_process.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await chain_process.wait() == 0


async def test_an_unseen_transaction_may_still_land_until_its_blockhash_expires(
    remote: RemoteMarket, http: Client
) -> None:
    q = await sol_to_usdc(remote)
    tx = await remote.chain.build([q], min_out=0)  # built, never sent
    assert (await remote.chain.status(tx.signature)).state is TxState.UNKNOWN
    assert await remote.chain.can_still_land(tx.signature, tx.last_valid_slot)
    assert not await remote.chain.can_still_land(tx.signature, -1)
