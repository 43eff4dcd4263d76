"""Hostile input: schemathesis against the OpenAPI document of a live process, hypothesis
against the WebSocket messages and query parameters, and clients that never read. What
reaches the store is fuzzed over SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from order_engine.app import build_app
from order_engine.venues import SimulatedMarket
from tests.support.clients import post_order, read_until_closed, services
from tests.support.factories import ORDER, make_settings
from tests.support.processes import engine_process, free_port, run
from tests.support.services import postgres_schema

ST_CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    ]
)


@asynccontextmanager
async def store_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/orders.db"
        return
    async with postgres_schema() as url:
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    tmp_path: Path, backend: str
) -> None:
    port = free_port()
    async with (
        store_url(backend, tmp_path) as url,
        engine_process(
            tmp_path, port, ORDER_ENGINE_VENUES_PROFILE="instant", ORDER_ENGINE_STORE_URL=url
        ) as engine,
    ):
        st_cli = Path(sys.executable).with_name("st")
        done = await run(
            [str(st_cli), "run", f"{engine.url}/api/openapi.json",
             "--checks", ST_CHECKS, "--max-examples", "40", "--seed", "1"],
            env={"NO_COLOR": "1"},
            timeout=240,
        )  # fmt: skip
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert " passed" in report


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
ORDER_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "tokenIn": st.sampled_from(["SOL", "USDC", "bonk", "", "X"]) | JSONISH,
        "tokenOut": st.sampled_from(["USDC", "SOL", "JUP"]) | JSONISH,
        "amount": st.decimals(allow_nan=False, allow_infinity=False).map(str) | JSONISH,
        "slippageBps": st.integers(-10, 10_000) | JSONISH,
        "clientOrderId": st.text(max_size=80) | JSONISH,
        "extra": JSONISH,
    },
)
MESSAGES = (
    ORDER_LIKE.map(lambda d: json.dumps(d))
    | st.text(max_size=200)
    | st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(message=MESSAGES)
async def test_any_first_message_on_the_submit_socket_is_answered_cleanly(
    any_store_client: TestClient[Any, Application], message: str
) -> None:
    client = any_store_client
    async with client.ws_connect("/api/orders/execute") as ws:
        await ws.send_str(message)
        replies = await read_until_closed(ws)
        assert replies, "the server always answers before closing"
        first = replies[0]
        if "error" in first:
            assert ws.close_code == 1008
            assert first["error"]["code"]
        else:
            assert first["status"] == "pending"
            assert ws.close_code == 1000
            assert replies[-1]["status"] in ("confirmed", "failed")


@FUZZ
@given(
    order_id=st.text(max_size=60) | st.uuids().map(str),
    after=st.none() | st.text(max_size=12) | st.integers(-5, 10**20).map(str),
)
@example(order_id="00000000-0000-4000-8000-000000000000", after="2147483648")  # past int4
async def test_any_status_query_is_answered_cleanly(
    any_store_client: TestClient[Any, Application], order_id: str, after: str | None
) -> None:
    client = any_store_client
    params = {"orderId": order_id} if after is None else {"orderId": order_id, "after": after}
    async with client.ws_connect("/api/order/status", params=params) as ws:
        replies = await read_until_closed(ws)
    assert ws.close_code in (1000, 1008, 4404)
    if ws.close_code != 1000:
        assert replies and replies[0]["error"]["code"]


async def test_a_slow_body_is_cut_off_and_others_are_served(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    """Slowloris: a client that sends its body slowly gets 408 and does not hold the server."""
    settings = make_settings(tmp_path, server={"body_timeout_s": 0.3})
    client = await aiohttp_client(build_app(settings, market=market))
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /api/order/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    await writer.drain()
    order_id = await post_order(client)  # others are served meanwhile
    assert (await client.get(f"/api/order/{order_id}")).status == 200
    async with asyncio.timeout(5):
        status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    writer.close()


@pytest.mark.slow
async def test_thousands_of_sockets_that_never_read_do_not_stop_the_others(
    client: TestClient[Any, Application],
) -> None:
    """5,000 watchers that never read: the server keeps serving everyone else."""
    services(client).market.chain.hold()
    order_id = await post_order(client)
    url = f"http://{client.server.host}:{client.server.port}/api/order/status?orderId={order_id}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        idle = await asyncio.gather(*(session.ws_connect(url) for _ in range(5_000)))
        try:
            assert not any(ws.closed for ws in idle)
            other = await post_order(client, **{**ORDER, "amount": 2})
            services(client).market.chain.release()
            events = await asyncio.wait_for(_watch(session, url, other), 10)
            assert events[-1]["status"] == "confirmed"
        finally:
            await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)


async def _watch(session: aiohttp.ClientSession, url: str, order_id: str) -> list[Any]:
    async with session.ws_connect(url.split("?")[0] + f"?orderId={order_id}") as ws:
        return await read_until_closed(ws)
